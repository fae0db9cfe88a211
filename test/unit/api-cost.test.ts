import { readFileSync } from 'node:fs';
import { type FragmentDefinitionNode, Kind, parse, print, specifiedRules, validate } from 'graphql';
import { describe, expect, it } from 'vitest';
import { operationCostRule } from '../../src/api/content-cost.js';
import { schema } from '../../src/api/schema/index.js';
import { parseConfig } from '../../src/config.js';
import { MAX_DIAGNOSTIC_MESSAGE_CHARS, parseDiagnostics } from '../../src/toolchain/diagnostics.js';

// What a screen asks in one document (Relay and Apollo compose each screen's fragments
// into one query): the contract's operations joined as a client would join them fit the
// default GRAPHQL_MAX_COST, and what could answer tens of MB still does not.

const maxCost = parseConfig({}).limits.maxCost;
const contract = parse(readFileSync(new URL('../../contract/operations.graphql', import.meta.url), 'utf8'));
const fragments = new Map(
  contract.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, print(d)]),
);

/** The cost of a one-operation document (with the contract fragments it names), which must be valid. */
function costOf(operation: string): number {
  const used = [...fragments].filter(([name]) => operation.includes(`...${name}`)).map(([, text]) => text);
  let cost: number | undefined;
  const errors = validate(schema, parse([operation, ...used].join('\n')), [...specifiedRules, operationCostRule((_context, price) => (cost = price))]);
  expect(errors.map((error) => error.message)).toEqual([]);
  return cost!;
}

const GENERATION = `...GenerationFields project { id } parent { id } retryOf { id } output files { path size sha256 }
  buildSteps { name command status exitCode durationMs } buildLog(tail: 200) { seq step stream text }`;
const FIXES = `diagnostics { round tool severity path line column code message }
  fixRounds { round status startedAt finishedAt usage { inputTokens outputTokens } }`;
const DIAGNOSTICS = 'diagnostics { round tool severity path line column code message }';

describe('the cost of a screen joined into one document', () => {
  it.each([
    ['Generation with GenerationFixes', `query GenerationScreen($id: ID!) { generation(id: $id) { ${GENERATION} ${FIXES} } }`],
    ['a generation\'s output with all its diagnostics', `query OutputAndDiagnostics($id: ID!) { generation(id: $id) { output ${DIAGNOSTICS} } }`],
    [
      'Generation with its preview, archive and diff counts',
      `query GenerationOutputs($id: ID!, $format: ArchiveFormat) { generation(id: $id) { ${GENERATION}
        preview { url expiresAt } archive(format: $format) { url expiresAt filename }
        diff { against { id } additions deletions files { path change additions deletions } } } }`,
    ],
    [
      'Project with Conversation',
      `query ProjectScreen($id: ID!, $sessionId: ID!) { project(id: $id) { ...ProjectFields members { role user { id email } }
        usage { inputTokens outputTokens generationCount }
        generations(first: 20) { pageInfo { hasNextPage endCursor } edges { node { ...GenerationFields } } }
        conversation(sessionId: $sessionId) { role content createdAt generation { id } } } }`,
    ],
    ['projects with their latest generations', 'query Dashboard { projects(first: 5) { edges { node { ...ProjectFields generations(first: 3) { edges { node { ...GenerationFields } } } } } } }'],
  ])('lets %s through', (_screen, operation) => {
    expect(costOf(operation)).toBeLessThanOrEqual(maxCost);
  });

  it.each([
    // Fifteen model outputs: 300 MB at worst.
    ['projects with the outputs of their latest generations', 'query Outputs { projects(first: 5) { edges { node { generations(first: 3) { edges { node { id output } } } } } } }'],
    // An output, and a diff's patches worked out and sent: three times 20 MiB.
    ['Generation with GenerationDiff', `query GenerationAndDiff($id: ID!) { generation(id: $id) { ${GENERATION} diff { files { path patch } } } }`],
    // The same diagnostics twice beside the output.
    ['diagnostics aliased beside the output', `query Twice($id: ID!) { generation(id: $id) { output ${DIAGNOSTICS} again: ${DIAGNOSTICS} } }`],
  ])('still refuses %s', (_what, operation) => {
    expect(costOf(operation)).toBeGreaterThan(maxCost);
  });

  it("prices a diagnostic's message, path and code within one bound, and each alias of one again", () => {
    const diagnostics = (selection: string) => costOf(`query D($id: ID!) { generation(id: $id) { diagnostics { ${selection} } } }`);
    const base = diagnostics('round');
    const each = ['message', 'path', 'code'].map((field) => diagnostics(`round ${field}`) - base);
    expect(new Set(each).size).toBe(1);
    const [one] = each as [number];
    // Cut from the same lines, the three cost less together than each on its own would.
    expect(diagnostics('round message path code') - base).toBeLessThan(3 * one - one / 2);
    // An alias sends the same text again.
    expect(diagnostics('round a: message b: message c: message') - base).toBeCloseTo(3 * one, 6);
  });

  it("holds a diagnostic's message to the length the parser cuts it to", () => {
    const [diagnostic] = parseDiagnostics('tsc', [`src/App.tsx(1,1): error TS2322: ${'x'.repeat(5 * MAX_DIAGNOSTIC_MESSAGE_CHARS)}`], ['/workspace']);
    expect(diagnostic!.message.length).toBe(MAX_DIAGNOSTIC_MESSAGE_CHARS);
  });
});
