import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { parseConfig } from '../src/config.js';
import { openDatabase, rowsOf } from '../src/db/client.js';
import { createOfflineProvider } from '../src/llm/offline.js';
import { startKiln } from '../src/main.js';
import { createLogger } from '../src/observability/logger.js';
import { fetchEnv } from '../src/toolchain/dependency-policy.js';
import { buildEnv, runStep } from '../src/toolchain/step-runner.js';
import { getTarget } from '../src/toolchain/targets.js';
import { openGenerationSession, pipelineBenchEnv, writeFakeFlutter } from './support/generation-session.js';

// What the pipeline adds to a generation beyond the model and the build (issue 13, goal 3):
// FLUTTER generations from the offline provider (OFFLINE_CHUNK_DELAY_MS=0) built by the
// tests' fake flutter, one after another, half of them follow-ups (the parent's files and
// the conversation are read), on a project with a monthly budget (reservations). Wall
// time runs from sending startGeneration to SUCCEEDED seen over graphql-ws, so queue
// pick-up, every database write and read, the events, the workspace and the artefacts all
// count. The baseline, measured in the same run right after each generation: the same
// answer streamed from the offline provider in this process, then the target's build
// steps run directly (runStep, no database) in a copy of that generation's workspace.
// overhead = wall − baseline. A breakdown from the timestamps the pipeline records
// (created, started, build steps, finished) shows where it goes.
//
// PIPELINE_BENCH_RUNS (default 20) generations, after 2 warm-ups. On PostgreSQL with
// TEST_DATABASE_URL (a database of its own is created and dropped).

const RUNS = Number(process.env.PIPELINE_BENCH_RUNS ?? 20);
const log = (line: string) => process.stdout.write(`${line}\n`);
const median = (values: number[]) => quantile(values, 0.5);
const quantile = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]!;
const rawId = (globalId: string) => Buffer.from(globalId, 'base64').toString('utf8').split(':').slice(1).join(':');

export default async function bench(): Promise<void> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'kiln-bench-pipeline-'));
  const flutterBin = await writeFakeFlutter(dataDir);
  const pg = await benchPostgres();
  const config = parseConfig({
    ...pipelineBenchEnv(dataDir, flutterBin),
    AUTO_FIX_MAX_ROUNDS: '0',
    ...(pg ? { DATABASE_URL: pg.url } : {}),
  });
  // Opened here to count the statements each generation costs.
  let statements = 0;
  const database = await openDatabase({ url: config.database.url, dataDir, onQuery: () => statements++ });
  const kiln = await startKiln(config, { port: 0, logger: createLogger('silent'), database });
  const benchStarted = performance.now();
  const client = await openGenerationSession(kiln.url);
  try {
    const { gql } = client;
    await gql('mutation($id: ID!) { setProjectBudget(input: { projectId: $id, monthlyTokenLimit: 100000000 }) { __typename } }', { id: client.projectId });
    const projectId = rawId(client.projectId);
    const spec = getTarget('FLUTTER');

    const run = async (prompt: string, sessionId: string | null) => {
      const before = statements;
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      const { startGeneration } = await gql<{ startGeneration: { id: string; sessionId: string } }>(
        'mutation($input: StartGenerationInput!) { startGeneration(input: $input) { ... on Generation { id sessionId } ... on Error { message } } }',
        { input: { projectId: client.projectId, prompt, sessionId } },
      );
      const answered = performance.now();
      await client.terminal(startGeneration.id);
      const wall = performance.now() - started;
      const seenAt = Date.now();
      const cpu = cpuMs(cpuBefore);
      const count = statements - before;
      const id = rawId(startGeneration.id);
      const times = await timestamps(database.db, id);
      if (times.status !== 'SUCCEEDED') throw new Error(`a bench generation ended ${times.status}`);

      // The baseline: the same answer from the model, then the same steps straight on the workspace.
      const messages = sessionId ? [{ role: 'user' as const, content: 'earlier' }, { role: 'model' as const, content: '…' }, { role: 'user' as const, content: prompt }] : [{ role: 'user' as const, content: prompt }];
      const cpuBaseline = process.cpuUsage();
      const modelStarted = performance.now();
      for await (const _ of offline.stream({ target: 'FLUTTER', systemPrompt: '', messages, signal: new AbortController().signal, round: 0 }));
      const model = performance.now() - modelStarted;
      // A copy outside the workspaces: the worker's orphan reaper stops builds in those of finished generations.
      const cwd = path.join(dataDir, 'direct', id);
      await cp(path.join(config.workspaces.dir, projectId, id), cwd, { recursive: true });
      const buildStarted = performance.now();
      for (const step of spec.steps) {
        const result = await runStep({ command: flutterBin, args: step.args, cwd, env: buildEnv(step.fetch ? fetchEnv(step.tool) : {}), timeoutMs: 30_000, onLine: () => undefined });
        if (result.status !== 'SUCCEEDED') throw new Error(`the direct step ${step.name} failed: ${JSON.stringify(result)}`);
      }
      const build = performance.now() - buildStarted;
      const baselineCpu = cpuMs(cpuBaseline);
      await rm(cwd, { recursive: true, force: true });
      return {
        sessionId: startGeneration.sessionId,
        wall,
        baseline: model + build,
        overhead: wall - model - build,
        cpuOverhead: cpu - baselineCpu,
        statements: count,
        // Where the time went, from what the pipeline records.
        parts: {
          mutation: answered - started,
          queued: times.startedAt - times.createdAt,
          toBuild: times.firstStepAt - times.startedAt - model,
          betweenSteps: times.stepGaps,
          build: times.stepsMs - build,
          afterBuild: times.finishedAt - times.lastStepAt,
          seen: seenAt - times.finishedAt,
        },
      };
    };

    let session: string | null = null;
    for (let i = 0; i < 2; i++) session = (await run(`Warm-up app ${i}`, i === 0 ? null : session)).sessionId; // compiles, caches, first connections
    const results: Awaited<ReturnType<typeof run>>[] = [];
    for (let i = 0; i < RUNS; i++) {
      // Pairs: a new app, then a follow-up that builds on it.
      const result = await run(i % 2 === 0 ? `A counter number ${i}` : `Add a reset button to counter ${i - 1}`, i % 2 === 0 ? null : session);
      session = result.sessionId;
      results.push(result);
    }
    const m = (pick: (r: (typeof results)[number]) => number) => median(results.map(pick)).toFixed(1);
    log(`database: ${database.kind}; ${RUNS} generations (half of them follow-ups), FLUTTER, fake flutter, offline model, in ${((performance.now() - benchStarted) / 1000).toFixed(1)} s`);
    log(`baseline (model stream + build steps run directly): median ${m((r) => r.baseline)} ms`);
    log(`pipeline (startGeneration → SUCCEEDED over graphql-ws): median ${m((r) => r.wall)} ms, ${m((r) => r.statements)} SQL statements per generation`);
    log(
      `  where the overhead goes (medians, ms): startGeneration reply ${m((r) => r.parts.mutation)}, queued → claimed ${m((r) => r.parts.queued)}, ` +
        `claimed → first step beyond the model ${m((r) => r.parts.toBuild)}, build steps beyond running them ${m((r) => r.parts.build)} (${m((r) => r.parts.betweenSteps)} between steps), ` +
        `last step → finished ${m((r) => r.parts.afterBuild)}, finished → seen ${m((r) => r.parts.seen)}`,
    );
    log(`  this process's CPU time beyond the baseline's (steadier than wall time on a busy machine): median ${m((r) => r.cpuOverhead)} ms per generation`);
    const overhead = results.map((r) => r.overhead);
    log(`pipeline overhead per generation beyond LLM and build: median ${median(overhead).toFixed(1)} ms, p90 ${quantile(overhead, 0.9).toFixed(1)} ms (wall ${m((r) => r.wall)} − baseline ${m((r) => r.baseline)}); goal ≤ 50 ms: ${median(overhead) <= 50 ? 'met' : 'NOT met'}`);
  } finally {
    await client.close();
    await kiln.stop();
    await database.close();
    await pg?.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const offline = createOfflineProvider({ chunkDelayMs: 0 });

/** CPU time of this process (user and system) since `since`. */
const cpuMs = (since: NodeJS.CpuUsage) => {
  const { user, system } = process.cpuUsage(since);
  return (user + system) / 1000;
};

/** A database of its own on TEST_DATABASE_URL's server, dropped afterwards; none: PGlite. */
async function benchPostgres(): Promise<{ url: string; drop(): Promise<void> } | undefined> {
  const server = process.env.TEST_DATABASE_URL;
  if (!server) return undefined;
  const name = `kiln_bench_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = postgres(server, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(server);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/** The moments the pipeline recorded for a generation, in ms since the epoch. */
async function timestamps(db: Awaited<ReturnType<typeof openDatabase>>['db'], id: string) {
  const [row] = rowsOf<{ status: string; created: Date; started: Date; finished: Date; steps: { s: string; f: string }[] }>(
    await db.execute(sql`
      select g.status, g.created_at as created, g.started_at as started, g.finished_at as finished,
        (select json_agg(json_build_object('s', s.started_at, 'f', s.finished_at) order by s.ordinal) from build_steps s where s.generation_id = g.id) as steps
      from generations g where g.id = ${id}`),
  );
  const ms = (value: Date | string) => new Date(value).getTime();
  const steps = row!.steps.map((step) => ({ s: ms(step.s), f: ms(step.f) }));
  let gaps = 0;
  for (let i = 1; i < steps.length; i++) gaps += steps[i]!.s - steps[i - 1]!.f;
  return {
    status: row!.status,
    createdAt: ms(row!.created),
    startedAt: ms(row!.started),
    finishedAt: ms(row!.finished),
    firstStepAt: steps[0]!.s,
    lastStepAt: steps.at(-1)!.f,
    stepsMs: steps.reduce((sum, step) => sum + step.f - step.s, 0),
    stepGaps: gaps,
  };
}
