import { SpanKind } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { startTracing } from '../src/observability/tracing.js';
import { waitUntil } from './support/cluster.js';
import { type PgBossPair, startPgBossPair } from './support/pgboss-pair.js';
import { databaseKind, testDatabaseUrl } from './support/db.js';
import { createProject, type TestUser } from './support/fixtures.js';
import { type Generation, type Instance, rawId, startAccepted, waitForEnd } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';
import { tracingEnv, useInMemoryTracing } from './support/tracing.js';

// OpenTelemetry: one trace per generation, from the startGeneration operation through
// the queue to the worker's run, its model call and each build step. The SDK is started
// as main.ts starts it, with an in-memory exporter in place of the one OTEL_* would name.

const exporter = useInMemoryTracing();

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
const idOf = (span: ReadableSpan) => span.spanContext().spanId;
const ofGeneration = (id: string) => exporter.getFinishedSpans().filter((span) => span.attributes['kiln.generation.id'] === id);

/** The spans of a finished generation's trace; its run span ends just after the final status is published. */
async function traceOf(generation: Generation) {
  const id = rawId(generation.id);
  await waitUntil(() => ofGeneration(id).some((span) => span.name === 'generation run'), 10_000, () => `no run span for ${id}`);
  const run = ofGeneration(id).find((span) => span.name === 'generation run')!;
  const traceId = run.spanContext().traceId;
  const spans = exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === traceId);
  return {
    run,
    spans,
    operation: spans.find((span) => idOf(span) === parentOf(run)),
    llmCalls: spans.filter((span) => span.name === 'llm stream'),
    steps: spans.filter((span) => span.name.startsWith('build step ')),
  };
}

/** What every traced generation shows: startGeneration → run → (model call, each build step), one trace. */
function expectOneTrace(generation: Generation, trace: Awaited<ReturnType<typeof traceOf>>) {
  const { run, operation, llmCalls, steps, spans } = trace;
  expect(operation, 'the run is a child of the operation that started it').toBeDefined();
  expect(operation).toMatchObject({ name: 'mutation.StartGeneration', kind: SpanKind.SERVER });
  expect(operation!.attributes['graphql.execute.operationName']).toBe('StartGeneration');
  // The operation span is the root: nothing outside the request came before it.
  expect(parentOf(operation!)).toBeUndefined();
  expect(run).toMatchObject({ kind: SpanKind.CONSUMER });
  expect(run.attributes).toMatchObject({ 'kiln.generation.claimed': true, 'kiln.generation.status': 'SUCCEEDED' });

  expect(llmCalls).toHaveLength(1);
  expect(parentOf(llmCalls[0]!)).toBe(idOf(run));
  expect(llmCalls[0]!.attributes).toMatchObject({ 'gen_ai.system': 'offline', 'kiln.round': 0 });
  expect(llmCalls[0]!.attributes['gen_ai.usage.output_tokens']).toBe(generation.usage.outputTokens);

  // One span per build step the user sees, in the same order, each a child of the run.
  expect(generation.buildSteps.length).toBeGreaterThan(0);
  const ordered = [...steps].sort((a, b) => Number(a.attributes['kiln.build.ordinal']) - Number(b.attributes['kiln.build.ordinal']));
  expect(ordered.map((span) => span.attributes['kiln.build.step'])).toEqual(generation.buildSteps.map((step) => step.name));
  for (const step of ordered) {
    expect(parentOf(step), step.name).toBe(idOf(run));
    expect(step.attributes).toMatchObject({ 'kiln.build.status': 'SUCCEEDED', 'process.exit.code': 0 });
  }
  expect(spans.every((span) => span.resource.attributes['service.name'] === 'kiln-test')).toBe(true);
}

describe(`tracing on the memory queue (${databaseKind})`, () => {
  const suite = useGenerationServer(tracingEnv);

  it('follows each generation in a trace of its own, from startGeneration to the model call and every build step', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    // Two at once: each run must join the trace of the request that started it, not the other's.
    const started = await Promise.all([
      startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A todo list' }),
      startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A counter' }),
    ]);
    const finished = await Promise.all(started.map((g) => waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, g.id)));
    const traces = [];
    for (const generation of finished) {
      expect(generation).toMatchObject({ status: 'SUCCEEDED', error: null });
      const trace = await traceOf(generation);
      expectOneTrace(generation, trace);
      traces.push(trace);
    }
    expect(traces[0]!.run.spanContext().traceId).not.toBe(traces[1]!.run.spanContext().traceId);
  });
});

describe('tracing configuration', () => {
  it('is off unless an exporter or an OTLP endpoint is named, and OTEL_SDK_DISABLED=true always turns it off', async () => {
    expect(parseConfig({}).tracing.enabled).toBe(false);
    expect(parseConfig({ OTEL_SERVICE_NAME: 'kiln' }).tracing.enabled).toBe(false);
    expect(parseConfig({ OTEL_TRACES_EXPORTER: 'none' }).tracing.enabled).toBe(false);
    expect(parseConfig({ OTEL_TRACES_EXPORTER: 'console' }).tracing.enabled).toBe(true);
    expect(parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).tracing).toEqual({ enabled: true, serviceName: 'kiln' });
    expect(parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'TRUE' }).tracing.enabled).toBe(false);
    // Off: no SDK is loaded or started.
    expect(await startTracing(parseConfig({}).tracing)).toBeUndefined();
  });
});

describe.skipIf(!testDatabaseUrl)('tracing through QUEUE=pgboss (set TEST_DATABASE_URL to run)', () => {
  let api: Instance;
  let owner: TestUser;
  let pair: PgBossPair;

  beforeAll(async () => {
    // The context crosses in the job's data: the worker instance never sees the API's request.
    pair = await startPgBossPair('tracing', tracingEnv);
    ({ api, owner } = pair);
  });

  afterAll(async () => {
    await pair?.stop();
  });

  it('carries the trace from the API instance to the worker instance in the pg-boss job', async () => {
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A todo list' });
    const generation = await waitForEnd(api, owner.client, owner.accessToken, started.id);
    expect(generation).toMatchObject({ status: 'SUCCEEDED', error: null });
    expectOneTrace(generation, await traceOf(generation));
  });
});
