import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/observability/logger.js';
import { GenerationChunksDocument, GenerationDocument } from './gql/graphql.js';
import { createTestDatabase, databaseKind } from './support/db.js';
import { createProject, signUp, type TestUser } from './support/fixtures.js';
import { type FakeFlutter, fakeFlutter, rawId, startAccepted, waitForEnd, within, wsClient } from './support/generation-helpers.js';
import { type CapturedServer, LogCapture, startCapturedServer } from './support/log-capture.js';
import { refusalCounts, refusedOnly, seriesValue } from './support/metrics.js';
import { startTestServer } from './support/server.js';

// Logs carry who and what (request id, operation, user, project, generation) and
// never a secret; /metrics exposes the series an operator graphs and alerts on.

describe('log redaction', () => {
  it('censors tokens, keys, passwords and variables wherever they sit in a log record', () => {
    const logs = new LogCapture();
    const log = createLogger('trace', logs);
    const secret = (label: string) => `${label}-${randomBytes(8).toString('hex')}`;
    const values = {
      password: secret('pw'),
      accessToken: secret('at'),
      refreshToken: secret('rt'),
      authorization: `Bearer ${secret('bearer')}`,
      apiKey: secret('key'),
      token: secret('tok'),
      ciphertext: secret('ct'),
      value: secret('val'),
    };
    log.info(values, 'top level');
    log.info({ input: { email: 'a@example.com', password: values.password }, headers: { authorization: values.authorization } }, 'nested');
    log.info({ variables: { input: { password: values.password } }, connectionParams: { authorization: values.authorization } }, 'graphql');
    log.child({ source: 'x' }).warn({ req: { headers: { authorization: values.authorization, cookie: `sid=${values.token}` } } }, 'request');
    log.info({ config: { apiKey: values.apiKey, jwtSecret: values.token } }, 'config');

    for (const [name, value] of Object.entries(values)) expect(logs.text.includes(value), name).toBe(false);
    expect(logs.text).toContain('[redacted]');
    expect(logs.text).toContain('a@example.com');
  });

  it('keeps a failed query in an error, but not its bound parameters', async () => {
    const database = await createTestDatabase();
    try {
      const hidden = `hash-${randomBytes(8).toString('hex')}`;
      const error = await database.db.execute(sql`insert into no_such_table (secret) values (${hidden})`).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(String((error as Error).message)).toContain(hidden); // drizzle puts them in its message
      const logs = new LogCapture();
      createLogger('info', logs).error({ err: error }, 'query failed');
      expect(logs.text).toContain('insert into no_such_table (secret) values ($1)');
      expect(logs.text).not.toContain(hidden);
    } finally {
      await database.close();
    }
  });
});

describe(`operation logs and metrics (${databaseKind})`, () => {
  let flutter: FakeFlutter;
  let server: CapturedServer;
  let owner: TestUser;
  let generationId: string;
  let projectId: string;

  beforeAll(async () => {
    flutter = await fakeFlutter('ok');
    server = await startCapturedServer({ FLUTTER_BIN: flutter.bin, LOG_LEVEL: 'info', OFFLINE_CHUNK_DELAY_MS: '20' });
    owner = await signUp(server);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    projectId = project.id;
    const started = await startAccepted(owner.client, { projectId, prompt: 'A weather card' });
    generationId = started.id;
    // Follow the output live while it streams: one subscription is active meanwhile.
    const ws = wsClient(server.url, owner.accessToken);
    const events = ws.iterate({ query: print(GenerationChunksDocument), variables: { id: generationId } });
    try {
      await within(events.next(), 30_000, () => 'no chunk arrived');
      activeWhileStreaming = await scrape();
    } finally {
      await events.return?.();
      await ws.dispose();
    }
    expect((await waitForEnd(server, owner.client, owner.accessToken, generationId)).status).toBe('SUCCEEDED');
    await owner.client.expectNoErrors(GenerationDocument, { id: generationId });
  });

  afterAll(async () => {
    await server?.stop();
    await flutter?.remove();
  });

  let activeWhileStreaming = '';
  const scrape = async () => {
    const response = await fetch(`${server.url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/text\/plain/);
    return response.text();
  };

  it('logs each operation with its request id, name, type, user, and the project or generation it is about', () => {
    const records = server.logs.records().filter((r) => r.msg === 'operation');
    const byName = (name: string) => records.filter((r) => r.operationName === name);
    const [createProjectLog] = byName('CreateProject');
    expect(createProjectLog).toMatchObject({ operationType: 'mutation', userId: rawId(owner.id), requestId: expect.any(String), errors: 0 });
    expect(createProjectLog!.durationMs).toEqual(expect.any(Number));
    const [start] = byName('StartGeneration');
    expect(start).toMatchObject({ projectId: rawId(projectId), operationType: 'mutation' });
    const [read] = byName('Generation');
    expect(read).toMatchObject({ generationId: rawId(generationId), operationType: 'query', userId: rawId(owner.id) });
    // Request ids are per request.
    expect(new Set(records.map((r) => r.requestId)).size).toBe(records.length);
    const subscribed = server.logs.records().find((r) => r.msg === 'subscription' && r.operationName === 'GenerationChunks');
    expect(subscribed).toMatchObject({ generationId: rawId(generationId), operationType: 'subscription' });
    // The pipeline's lines name the generation and project.
    expect(server.logs.records().find((r) => r.msg === 'generation finished')).toMatchObject({
      generationId: rawId(generationId),
      projectId: rawId(projectId),
      status: 'SUCCEEDED',
    });
  });

  it('exposes HTTP, GraphQL, subscription, generation, build step, token and queue series on /metrics', async () => {
    expect(seriesValue(activeWhileStreaming, 'kiln_graphql_active_subscriptions{operation="GenerationChunks"}')).toBe(1);
    const text = await scrape();
    expect(seriesValue(text, 'kiln_graphql_active_subscriptions{operation="GenerationChunks"}')).toBe(0);
    expect(seriesValue(text, 'kiln_http_requests_total{method="POST",route="/graphql",status="200"}')).toBeGreaterThan(3);
    expect(seriesValue(text, 'kiln_graphql_operations_total{operation="StartGeneration",type="mutation",outcome="ok"}')).toBe(1);
    expect(seriesValue(text, 'kiln_graphql_operations_total{operation="GenerationChunks",type="subscription",outcome="ok"}')).toBe(1);
    expect(seriesValue(text, 'kiln_graphql_operation_duration_seconds_count{operation="CreateProject",type="mutation"}')).toBe(1);
    expect(seriesValue(text, 'kiln_generations{status="QUEUED"}')).toBe(0);
    expect(seriesValue(text, 'kiln_generations{status="RUNNING"}')).toBe(0);
    expect(seriesValue(text, 'kiln_queue_depth')).toBe(0);
    expect(seriesValue(text, 'kiln_generation_duration_seconds_count{status="SUCCEEDED",error_code="",provider="offline"}')).toBe(1);
    for (const step of ['install', 'analyze', 'build']) {
      expect(seriesValue(text, `kiln_build_step_duration_seconds_count{step="${step}",status="SUCCEEDED"}`), step).toBe(1);
    }
    expect(seriesValue(text, 'kiln_llm_tokens_total{provider="offline",kind="output"}')).toBeGreaterThan(100);
    expect(seriesValue(text, 'kiln_llm_tokens_total{provider="offline",kind="input"}')).toBeGreaterThan(100);
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    // Every limit has its series from the start, at 0 where nothing was turned away.
    expect(await refusalCounts(server.url)).toEqual(refusedOnly({}));
    // The scrape itself is counted on the next one.
    expect(seriesValue(await scrape(), 'kiln_http_requests_total{method="GET",route="/metrics",status="200"}')).toBeGreaterThanOrEqual(1);
  });
});

describe(`METRICS_TOKEN (${databaseKind})`, () => {
  it('keeps /metrics to scrapers with the token', async () => {
    const token = randomBytes(24).toString('hex');
    const server = await startTestServer({ METRICS_TOKEN: token });
    try {
      expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
      expect((await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
      const allowed = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(allowed.status).toBe(200);
      expect(await allowed.text()).toContain('kiln_http_requests_total');
      // The scheme's name is case-insensitive in HTTP; the token itself is not.
      for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
        expect((await fetch(`${server.url}/metrics`, { headers: { authorization: `${scheme} ${token}` } })).status, scheme).toBe(200);
      }
      for (const refused of [`Bearer ${token.toUpperCase()}`, `Basic ${token}`, `Bearer${token}`, token]) {
        expect((await fetch(`${server.url}/metrics`, { headers: { authorization: refused } })).status, refused).toBe(401);
      }
    } finally {
      await server.stop();
    }
  });
});
