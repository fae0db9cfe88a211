import { readFileSync } from 'node:fs';
import {
  type DocumentNode,
  getNullableType,
  isInterfaceType,
  isListType,
  isObjectType,
  Kind,
  type OperationDefinitionNode,
  parse,
  specifiedRules,
  validate,
} from 'graphql';
import { describe, expect, it } from 'vitest';
import { LIST_BOUNDS, operationCostRule } from '../src/api/content-cost.js';
import { schema } from '../src/api/schema/index.js';
import { parseConfig } from '../src/config.js';

// The operation cost read from documents alone (no server): what each client document
// costs against the default GRAPHQL_MAX_COST, and that variables and omitted arguments
// are priced at the most they may be.

const maxCost = parseConfig({}).limits.maxCost;

/** The cost of each operation of a document, by name (or its index). */
function costs(document: DocumentNode): Map<string, number> {
  const found = new Map<string, number>();
  const names = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION).map((o, i) => o.name?.value ?? String(i));
  let next = 0;
  const errors = validate(schema, document, [...specifiedRules, operationCostRule((_context, cost) => found.set(names[next++]!, cost))]);
  expect(errors.map((error) => error.message)).toEqual([]);
  return found;
}
const costOf = (query: string) => [...costs(parse(query)).values()][0]!;

describe('the operation cost', () => {
  it('keeps every document the clients send within the default limit', () => {
    // The web client sends the contract's operations and its own: one document holds them all.
    const contract = readFileSync(new URL('../contract/operations.graphql', import.meta.url), 'utf8');
    const web = readFileSync(new URL('../web/src/operations.graphql', import.meta.url), 'utf8');
    const all = costs(parse(`${contract}\n${web}`));
    expect(all.size).toBeGreaterThan(30);
    const over = [...all].filter(([, cost]) => cost > maxCost);
    expect(over).toEqual([]);
  });

  it('bounds every list of the schema: a connection by its page, any other by its own bound', () => {
    const lists = Object.values(schema.getTypeMap())
      .flatMap((type) => (!type.name.startsWith('__') && (isObjectType(type) || isInterfaceType(type)) ? [type] : []))
      .flatMap((type) => Object.values(type.getFields()).flatMap((field) => (isListType(getNullableType(field.type)) ? [`${type.name}.${field.name}`] : [])));
    const unbounded = lists.filter((coordinate) => !LIST_BOUNDS[coordinate] && !/Connection\.edges$/.test(coordinate));
    expect(unbounded).toEqual([]);
    expect(Object.keys(LIST_BOUNDS).filter((coordinate) => !lists.includes(coordinate))).toEqual([]);
  });

  it('prices a variable or omitted first as the largest page, and variable ids as the most nodes takes', () => {
    const page = (first: string) => costOf(`query${first.includes('$n') ? '($n: Int)' : ''} { projects${first} { edges { node { id name } } } }`);
    expect(page('(first: $n)')).toBe(page('(first: 100)'));
    expect(page('')).toBe(page('(first: 100)'));
    expect(page('(first: 10)')).toBeLessThan(page('(first: 100)') / 5);

    const ids = (argument: string) => costOf(`query${argument === '$ids' ? '($ids: [ID!]!)' : ''} { nodes(ids: ${argument}) { ... on Generation { prompt } } }`);
    expect(ids('$ids')).toBe(ids(JSON.stringify(Array.from({ length: 100 }, (_, i) => String(i)))));
  });

  it('counts every field however deep, so nested pages of prompts cannot add up', () => {
    const nested = (n: string) => `project(id: $id) { generations(first: ${n}) { edges { node { project { generations(first: ${n}) { edges { node { prompt } } } } } } } }`;
    expect(costOf(`query($id: ID!, $n: Int) { ${nested('$n')} }`)).toBeGreaterThan(maxCost);
    expect(costOf(`query($id: ID!) { ${nested('10')} }`)).toBeLessThan(maxCost);
    // A field with no content of its own still costs something at every level.
    expect(costOf('{ projects(first: 100) { edges { node { generations(first: 100) { edges { node { files { path } } } } } } } }')).toBeGreaterThan(maxCost);
  });

  it('prices a conversation as its bound all together, once per alias', () => {
    const conversation = (count: number) =>
      `query($id: ID!, $s: ID!) { project(id: $id) { ${Array.from({ length: count }, (_, i) => `c${i}: conversation(sessionId: $s) { content }`).join(' ')} } }`;
    expect(costOf(conversation(1))).toBeLessThan(maxCost);
    expect(costOf(conversation(2))).toBeGreaterThan(maxCost);
  });
});
