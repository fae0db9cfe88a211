import { describe, expect, it } from 'vitest';
import { estimateTokens } from '../src/generations/budget.js';
import { MAX_GENERATION_OUTPUT_CHARS } from '../src/generations/output-parser.js';
import { CancelGenerationDocument, GeneratedFileDocument, GenerationChunksWithRoundDocument, SetProjectBudgetDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import type { GeminiBehaviour } from './support/fake-gemini.js';
import { BuildRoundsDocument, fixesOf } from './support/fix-rounds.js';
import { createProject, expectTypename } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import {
  GenerationWatch,
  getGeneration,
  startAccepted,
  startGeneration,
  subscribe,
  waitForEnd,
  within,
  wsClient,
} from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';

// Self-healing builds as their owner sees them: a FLUTTER project whose code comes from
// a fake Gemini (scripted per request) and is checked by the fake flutter, which
// reports an error at the line of lib/main.dart holding "deliberate build error".

const HEADER = "import 'package:flutter/material.dart';\n";
const MAIN = 'void main() => runApp(const Placeholder());\n';
/** lib/main.dart with the marked error on line `line` (2 or more). */
const brokenMain = (line = 2) => `${HEADER}${'\n'.repeat(line - 2)}const int itemCount = 'every item'; // deliberate build error\n${MAIN}`;
const FIXED_MAIN = `${HEADER}const int itemCount = 3;\n${MAIN}`;
const answer = (intro: string, main: string) => `${intro}\n<file path="lib/main.dart">\n${main}</file>\n`;
const stream = (text: string, usage = { promptTokens: 100, outputTokens: 20 }): Extract<GeminiBehaviour, { kind: 'stream' }> => ({
  kind: 'stream',
  chunks: [text.slice(0, 30), text.slice(30)],
  usage,
});

describe(`self-healing builds (${databaseKind})`, () => {
  const suite = useGeminiServer();

  async function start(prompt: string, maxFixRounds?: number | null) {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const requestsBefore = suite.gemini.requests.length;
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt, maxFixRounds });
    return { project, started, requestsBefore };
  }

  /** The chunks with their rounds, up to the first one `stopAt` accepts, or to the end of the output. */
  async function chunksWithRound(id: string, stopAt?: (chunk: { round: number }) => boolean) {
    const client = wsClient(suite.server.url, suite.owner.accessToken);
    const chunks: { seq: number; round: number; text: string }[] = [];
    try {
      await within(
        (async () => {
          for await (const { generationChunks } of subscribe(client, GenerationChunksWithRoundDocument, { id })) {
            chunks.push(generationChunks);
            if (stopAt?.(generationChunks)) return;
          }
        })(),
        30_000,
        () => `generationChunks did not complete; got ${chunks.length}`,
      );
    } finally {
      await client.dispose();
    }
    return chunks;
  }

  it('sends the diagnostic and the file back to the model and succeeds with the fixed file', async () => {
    // The fix answer takes a moment, so its FIXING phase is there to be seen. The run starts only once
    // the watch follows it: until then a run whose model never answers holds the one worker.
    // lib/items.dart is written in round 0 and named by no diagnostic: the system prompt's files are the parent's, so only the model's own answer shows it.
    const ITEMS = '<file path="lib/items.dart">\nconst items = [1, 2, 3];\n</file>';
    const first = `${answer('First try.', brokenMain())}${ITEMS}\n`;
    suite.gemini.script({ kind: 'stall', chunks: [] }, stream(first), {
      ...stream(answer('Fixed.', FIXED_MAIN), { promptTokens: 300, outputTokens: 40 }),
      delayMs: 300,
    });
    const blocker = await start('Holds the worker');
    await suite.gemini.received(blocker.requestsBefore + 1);
    const { started, requestsBefore } = await start('A counter');
    const watch = new GenerationWatch(suite.server.url, suite.owner.accessToken, started.id);
    let end;
    try {
      expect(await watch.until(() => true)).toMatchObject({ status: 'QUEUED' });
      expectTypename((await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: blocker.started.id })).cancelGeneration, 'Generation');
      end = await watch.finished();
    } finally {
      await watch.close();
    }

    expect(end).toMatchObject({ status: 'SUCCEEDED', phase: 'DONE', error: null });
    const phases = watch.states.map((s) => s.phase);
    expect(phases.indexOf('BUILDING')).toBeLessThan(phases.indexOf('FIXING'));
    expect(phases.indexOf('FIXING')).toBeLessThan(phases.indexOf('DONE'));

    // Two model calls; the second carries the diagnostic and the whole broken file.
    expect(suite.gemini.requests.length - requestsBefore).toBe(2);
    const fix = suite.gemini.requests[requestsBefore + 1]!.body.contents;
    expect(fix.map((c) => c.role)).toEqual(['user', 'model', 'user']);
    expect(fix[0]!.parts[0]!.text).toBe('A counter');
    expect(fix[1]!.parts[0]!.text).toContain(ITEMS);
    const request = fix[2]!.parts[0]!.text;
    expect(request).toContain("lib/main.dart:2:23 error invalid_assignment (flutter): A value of type 'String' can't be assigned to a variable of type 'int'.");
    expect(request).toContain(`<file path="lib/main.dart">\n${brokenMain()}</file>`);
    expect(request).toMatch(/whole new content/);

    const fixes = await fixesOf(suite.owner.client, started.id);
    expect(fixes.diagnostics).toEqual([
      {
        round: 0,
        tool: 'flutter',
        severity: 'ERROR',
        path: 'lib/main.dart',
        line: 2,
        column: 23,
        code: 'invalid_assignment',
        message: "A value of type 'String' can't be assigned to a variable of type 'int'.",
      },
    ]);
    expect(fixes.fixRounds).toEqual([
      { round: 1, status: 'SUCCEEDED', startedAt: expect.any(String), finishedAt: expect.any(String), usage: { inputTokens: 300, outputTokens: 40 } },
    ]);

    const generation = await getGeneration(suite.owner.client, started.id);
    expect(generation.usage).toEqual({ inputTokens: 400, outputTokens: 60 });
    const { generation: main } = await suite.owner.client.expectNoErrors(GeneratedFileDocument, { id: started.id, path: 'lib/main.dart' });
    expect(main?.file?.content).toBe(FIXED_MAIN);

    // Chunks: contiguous seqs across both answers, each with its round; the output is all of them.
    const chunks = await chunksWithRound(started.id);
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.round)).toEqual([...chunks.map((c) => c.round)].sort());
    expect(chunks.filter((c) => c.round === 0).map((c) => c.text).join('')).toBe(first);
    expect(chunks.filter((c) => c.round === 1).map((c) => c.text).join('')).toBe(answer('Fixed.', FIXED_MAIN));
    expect(generation.output).toBe(chunks.map((c) => c.text).join(''));

    // Build steps go on across rounds (pub get runs again only when pubspec.yaml changed);
    // log lines carry their round with contiguous seqs.
    const { generation: rounds } = await suite.owner.client.expectNoErrors(BuildRoundsDocument, { id: started.id });
    expect(rounds?.buildSteps.map((s) => [s.ordinal, s.name, s.status, s.round])).toEqual([
      [0, 'install', 'SUCCEEDED', 0],
      [1, 'analyze', 'FAILED', 0],
      [2, 'build', 'SKIPPED', 0],
      [3, 'analyze', 'SUCCEEDED', 1],
      [4, 'build', 'SUCCEEDED', 1],
    ]);
    const log = rounds!.buildLog;
    expect(log.map((l) => l.seq)).toEqual(log.map((_, i) => i));
    expect(log.find((l) => l.text.startsWith('ERROR|'))?.round).toBe(0);
    expect(log.find((l) => l.text.startsWith('✓ Built'))?.round).toBe(1);

    const metrics = await (await fetch(`${suite.server.url}/metrics`)).text();
    expect(metrics).toMatch(/kiln_fix_rounds_total\{outcome="succeeded"\} [1-9]/);
    expect(metrics).toMatch(/kiln_llm_round_tokens_total\{round_kind="fix",kind="output"\} [1-9]/);
  });

  it('fetches dependencies again in a fix round that rewrites pubspec.yaml', async () => {
    const pubspec = 'name: kiln_app\nenvironment:\n  sdk: ">=3.4.0 <4.0.0"\ndependencies:\n  flutter:\n    sdk: flutter\n';
    suite.gemini.script(stream(answer('Broken.', brokenMain())), stream(`${answer('Fixed, with a tidier pubspec.', FIXED_MAIN)}<file path="pubspec.yaml">\n${pubspec}</file>\n`));
    const { started } = await start('A packaged app');
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation.status).toBe('SUCCEEDED');
    const { generation: rounds } = await suite.owner.client.expectNoErrors(BuildRoundsDocument, { id: started.id });
    expect(rounds?.buildSteps.filter((s) => s.round === 1).map((s) => [s.name, s.status])).toEqual([
      ['install', 'SUCCEEDED'],
      ['analyze', 'SUCCEEDED'],
      ['build', 'SUCCEEDED'],
    ]);
  });

  it('stops after 1 + maxFixRounds calls when the build never heals, and says so', async () => {
    // A different problem each time, so every round makes progress of a kind.
    suite.gemini.script(...[2, 3, 4, 5, 6].map((line) => stream(answer(`Try with the error on line ${line}.`, brokenMain(line)))));
    const { started, requestsBefore } = await start('A timer', 3);
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'BUILD_FAILED' } });
    expect(generation.error?.message).toMatch(/still failed after 3 fix rounds/);
    expect(suite.gemini.requests.length - requestsBefore).toBe(4);
    const fixes = await fixesOf(suite.owner.client, started.id);
    expect(fixes.fixRounds.map((r) => [r.round, r.status])).toEqual([
      [1, 'FAILED'],
      [2, 'FAILED'],
      [3, 'FAILED'],
    ]);
    expect(fixes.diagnostics.map((d) => [d.round, d.line])).toEqual([
      [0, 2],
      [1, 3],
      [2, 4],
      [3, 5],
    ]);
  });

  it('stops when a round brings no progress (the same diagnostics again)', async () => {
    suite.gemini.script(stream(answer('Broken.', brokenMain())), stream(answer('Still broken.', `${brokenMain()}// a comment\n`)));
    const { started, requestsBefore } = await start('A clock', 4);
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'BUILD_FAILED' } });
    expect(generation.error?.message).toMatch(/Fix round 1 made no progress/);
    expect(suite.gemini.requests.length - requestsBefore).toBe(2);
    expect((await fixesOf(suite.owner.client, started.id)).fixRounds.map((r) => [r.round, r.status])).toEqual([[1, 'FAILED']]);
  });

  it('makes exactly one call with maxFixRounds 0, keeping the diagnostics', async () => {
    suite.gemini.script(stream(answer('Broken.', brokenMain())));
    const { started, requestsBefore } = await start('A list', 0);
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'BUILD_FAILED' } });
    expect(suite.gemini.requests.length - requestsBefore).toBe(1);
    const fixes = await fixesOf(suite.owner.client, started.id);
    expect(fixes.fixRounds).toEqual([]);
    expect(fixes.diagnostics.map((d) => [d.round, d.path, d.line])).toEqual([[0, 'lib/main.dart', 2]]);
  });

  it('refuses maxFixRounds above 5 or below 0 with a ValidationError', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    for (const maxFixRounds of [6, -1]) {
      const result = await startGeneration(suite.owner.client, { projectId: project.id, prompt: 'x', maxFixRounds });
      expect(result).toMatchObject({ __typename: 'ValidationError', fieldErrors: [{ path: expect.arrayContaining(['maxFixRounds']) }] });
    }
  });

  it('stops with BUDGET_EXCEEDED when the fix round would pass the monthly budget', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    await suite.owner.client.expectNoErrors(SetProjectBudgetDocument, { input: { projectId: project.id, monthlyTokenLimit: 6000 } });
    suite.gemini.script(stream(answer('Broken.', brokenMain()), { promptTokens: 5000, outputTokens: 900 }));
    const requestsBefore = suite.gemini.requests.length;
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A budgeted app' });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' }, usage: { inputTokens: 5000, outputTokens: 900 } });
    expect(suite.gemini.requests.length - requestsBefore).toBe(1);
    expect((await fixesOf(suite.owner.client, started.id)).fixRounds).toEqual([]);
  });

  it("stops with INVALID_OUTPUT when a fix round's answer takes the generation's output past its total", async () => {
    // Round 0 stays just under the generation's limit (prose, then the broken file), so no one answer is too long;
    // the fix round's answer passes it at its second chunk.
    const MiB = 1024 * 1024;
    const first = answer('Broken.', brokenMain());
    const sentence = 'I will now explain the app at length. ';
    const prose = sentence.repeat(Math.floor((MAX_GENERATION_OUTPUT_CHARS - first.length - 1000) / sentence.length));
    const chunks = [...Array.from({ length: Math.ceil(prose.length / MiB) }, (_, i) => prose.slice(i * MiB, (i + 1) * MiB)), first];
    const fix = `${'Fixed, and here is why. '.repeat(50)}${answer('Fixed.', FIXED_MAIN)}`;
    suite.gemini.script({ kind: 'stream', chunks, usage: { promptTokens: 100, outputTokens: 20 } }, stream(fix));
    const { started, requestsBefore } = await start('A long-winded app');
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(suite.gemini.requests.length - requestsBefore).toBe(2);
    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'INVALID_OUTPUT' } });
    expect(generation.error?.message).toMatch(/^The model's answer was too long/);
    // What was kept, the conversation's MODEL message with it: all of round 0, of round 1 only its first chunk.
    expect(generation.output).toBe(`${prose}${first}${fix.slice(0, 30)}`);
    expect(generation.output.length).toBeLessThanOrEqual(MAX_GENERATION_OUTPUT_CHARS);
    expect((await fixesOf(suite.owner.client, started.id)).fixRounds.map((r) => [r.round, r.status])).toEqual([[1, 'FAILED']]);
  });

  it('ends CANCELLED when cancelled during FIXING, closing the model stream', async () => {
    const cut = 'Let me fix that.\n<file path="lib/main.dart">\n';
    suite.gemini.script(stream(answer('Broken.', brokenMain())), { kind: 'stall', chunks: [cut] });
    const { started, requestsBefore } = await start('A cancelled fix');
    const watch = new GenerationWatch(suite.server.url, suite.owner.accessToken, started.id);
    let finished;
    try {
      await watch.until((g) => g.phase === 'FIXING');
      await suite.gemini.received(requestsBefore + 2);
      await chunksWithRound(started.id, (chunk) => chunk.round === 1);
      const { cancelGeneration } = await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
      expect(cancelGeneration.__typename).toBe('Generation');
      finished = await watch.finished();
      expect(finished).toMatchObject({ status: 'CANCELLED', phase: 'DONE', error: null });
    } finally {
      await watch.close();
    }
    await suite.gemini.requests[requestsBefore + 1]!.clientGone;
    const fixes = await fixesOf(suite.owner.client, started.id);
    expect(fixes.fixRounds.map((r) => [r.round, r.status, r.finishedAt !== null])).toEqual([[1, 'CANCELLED', true]]);
    // The cut round spent tokens (the estimate of what came), counted on it and on the generation with the first answer's.
    const spent = fixes.fixRounds[0]!.usage;
    expect(spent.inputTokens).toBeGreaterThan(0);
    expect(spent.outputTokens).toBe(estimateTokens(cut.length));
    expect(finished.usage).toEqual({ inputTokens: 100 + spent.inputTokens, outputTokens: 20 + spent.outputTokens });
    // The generationChunks stream completes now that the generation is over.
    const chunks = await chunksWithRound(started.id);
    expect(chunks.some((c) => c.round === 1)).toBe(true);
  });
});

describe(`the fake flutter's human format heals too (${databaseKind})`, () => {
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '0' }, 'human');

  it('the offline provider\'s "with a build error" demonstration fails its analyzer, then heals in round 1', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A habit tracker with a build error' });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);

    expect(generation).toMatchObject({ status: 'SUCCEEDED', error: null });
    const fixes = await fixesOf(suite.owner.client, started.id);
    expect(fixes.fixRounds.map((r) => [r.round, r.status])).toEqual([[1, 'SUCCEEDED']]);
    expect(fixes.diagnostics).toEqual([expect.objectContaining({ round: 0, tool: 'flutter', path: 'lib/main.dart', code: 'invalid_assignment' })]);
    const { generation: main } = await suite.owner.client.expectNoErrors(GeneratedFileDocument, { id: started.id, path: 'lib/main.dart' });
    expect(main?.file?.content).not.toContain('deliberate build error');
    expect(main?.file?.content).toContain('runApp(');
  });
});
