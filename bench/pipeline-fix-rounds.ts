import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config.js';
import { createOfflineProvider } from '../src/llm/offline.js';
import type { LlmMessage } from '../src/llm/provider.js';
import { startKiln } from '../src/main.js';
import { createLogger } from '../src/observability/logger.js';
import { openGenerationSession, pipelineBenchEnv, writeFakeFlutter } from './support/generation-session.js';

// What a self-healing fix round costs beyond the model and the build: FLUTTER
// generations from the offline provider (OFFLINE_CHUNK_DELAY_MS=0, so the model takes
// next to no time) built by the fake flutter of the tests, one after another, plain
// ones against "with a build error" ones (a broken first answer, healed in fix round 1).
// For each: wall time from the start mutation to the terminal state seen over
// graphql-ws, minus the time inside build steps, minus the model's own time (the same
// offline answers streamed in this process, timed apart). The difference of the
// medians is what one fix round adds: the fix prompt, its chunks, the writes, the
// rounds' bookkeeping and the phase changes.
//
// FIX_BENCH_RUNS (15 per kind).

const RUNS = Number(process.env.FIX_BENCH_RUNS ?? 15);
const log = (line: string) => process.stdout.write(`${line}\n`);

export default async function bench(): Promise<void> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'kiln-bench-fix-'));
  const flutterBin = await writeFakeFlutter(dataDir);
  const config = parseConfig(pipelineBenchEnv(dataDir, flutterBin));
  const kiln = await startKiln(config, { port: 0, logger: createLogger('silent') });
  const session = await openGenerationSession(kiln.url);
  try {
    const { gql, projectId } = session;
    const run = async (prompt: string) => {
      const started = performance.now();
      const { startGeneration } = await gql<{ startGeneration: { id: string } }>(
        'mutation($input: StartGenerationInput!) { startGeneration(input: $input) { ... on Generation { id } ... on Error { message } } }',
        { input: { projectId, prompt, maxFixRounds: 1 } },
      );
      await session.terminal(startGeneration.id);
      const wall = performance.now() - started;
      const { generation } = await gql<{ generation: { status: string; buildSteps: { durationMs: number | null }[]; fixRounds: { status: string }[] } }>(
        'query($id: ID!) { generation(id: $id) { status buildSteps { durationMs } fixRounds { status } } }',
        { id: startGeneration.id },
      );
      if (generation.status !== 'SUCCEEDED') throw new Error(`a bench generation ended ${generation.status}`);
      const build = generation.buildSteps.reduce((sum, step) => sum + (step.durationMs ?? 0), 0);
      const rounds = generation.fixRounds.length;
      let model = await modelMs([{ role: 'user', content: prompt }], 0);
      if (rounds > 0) model += await modelMs([{ role: 'user', content: prompt }, { role: 'model', content: '…' }, { role: 'user', content: 'fix' }], 1);
      return { outside: wall - build - model, rounds };
    };

    await run('Warm-up app'); // compiles, caches, first connections
    const plain: number[] = [];
    const healed: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      plain.push((await run(`A counter number ${i}`)).outside);
      const fixed = await run(`A counter number ${i} with a build error`);
      if (fixed.rounds !== 1) throw new Error(`expected one fix round, got ${fixed.rounds}`);
      healed.push(fixed.outside);
    }
    const p = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]!;
    log(`plain run (1 answer, 1 build):       outside model and build p50 ${p(plain, 0.5).toFixed(0)} ms, p90 ${p(plain, 0.9).toFixed(0)} ms (${RUNS} runs)`);
    log(`healed run (2 answers, 2 builds):    outside model and build p50 ${p(healed, 0.5).toFixed(0)} ms, p90 ${p(healed, 0.9).toFixed(0)} ms (${RUNS} runs)`);
    log(`fix round overhead beyond LLM and build: ${(p(healed, 0.5) - p(plain, 0.5)).toFixed(0)} ms per round (median healed − median plain)`);
  } finally {
    await session.close();
    await kiln.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const offline = createOfflineProvider({ chunkDelayMs: 0 });

/** How long the offline provider takes to stream this answer, in this process. */
async function modelMs(messages: LlmMessage[], round: number): Promise<number> {
  const started = performance.now();
  for await (const _ of offline.stream({ target: 'FLUTTER', systemPrompt: '', messages, signal: new AbortController().signal, round }));
  return performance.now() - started;
}
