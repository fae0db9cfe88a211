import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Client, createClient } from 'graphql-ws';
import { Kind, type OperationDefinitionNode, parse, print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ProjectsDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { signUp, type TestUser } from './support/fixtures.js';
import { type TestServer, startTestServer } from './support/server.js';

// Query limits hold on every transport (HTTP, SSE, graphql-ws) with the shipped
// defaults, say only that the operation was too big, and never close a socket.

type Result = { data?: unknown; errors?: { message: string; extensions?: { code?: string } }[] };

/** One operation over graphql-ws: its last result, or its errors when the server refuses it. Rejects if the socket closes. */
function overWs(client: Client, query: string, variables: Record<string, unknown> = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    let last: Result | undefined;
    client.subscribe(
      { query, variables },
      {
        next: (value) => void (last = value as Result),
        error: (error) => (Array.isArray(error) ? resolve({ errors: error }) : reject(new Error(`socket closed: ${JSON.stringify(error)}`))),
        complete: () => resolve(last ?? {}),
      },
    );
  });
}

function wsClient(url: string, token: string): Client {
  return createClient({
    url: `${url.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
  });
}

const repeat = (n: number, make: (i: number) => string) => Array.from({ length: n }, (_, i) => make(i)).join(' ');

/** `parent { parent { … { id } } }`: with generation above and id below, levels + 2 deep. */
const parents = (levels: number) => `${'parent { '.repeat(levels)}id${' }'.repeat(levels)}`;

// Each one crosses exactly one of the default limits (depth 10, 15 aliases, 10 directives, 2000 tokens, cost 50000).
const overLimit: Record<string, { query: string; variables?: Record<string, unknown> }> = {
  depth: { query: `query Deep($id: ID!) { generation(id: $id) { ${parents(9)} } }`, variables: { id: 'R2VuZXJhdGlvbjp4' } },
  'depth hidden in fragments': {
    query: `query Hidden($id: ID!) { generation(id: $id) { ...F0 } }
      ${repeat(9, (i) => `fragment F${i} on Generation { parent { ${i < 8 ? `...F${i + 1}` : 'id'} } }`)}`,
    variables: { id: 'R2VuZXJhdGlvbjp4' },
  },
  aliases: { query: `query Aliases { ${repeat(16, (i) => `a${i}: viewer { id }`)} }` },
  'aliases hidden in fragments': { query: `query Aliased { viewer { ...V } } fragment V on User { ${repeat(16, (i) => `a${i}: id`)} }` },
  directives: { query: `query Directives { viewer { ${repeat(11, (i) => `f${i}: id @include(if: true)`.replace(`f${i}: `, i < 5 ? `f${i}: ` : ''))} } }` },
  tokens: { query: `query Tokens { viewer { ${repeat(2000, () => 'id')} } }` },
  // Each fragment spreads the next twice: 2^40 places to price in a document of 1 KB, which held
  // the event loop for minutes; its pricing stops at a bound of selections and refuses it.
  'fragment fan-out': {
    query: `query FanOut { ...F0 } ${repeat(40, (i) => `fragment F${i} on Query { ...F${i + 1} ...F${i + 1} }`)} fragment F40 on Query { viewer { id } }`,
  },
  // A page from a variable counts as the largest page; every field counts at every level.
  cost: {
    query: 'query Costly($n: Int) { projects(first: $n) { edges { node { generations(first: $n) { edges { node { id files { path } } } } } } } }',
    variables: { n: 100 },
  },
};

function expectTooComplex(result: Result) {
  expect(result.data ?? null, JSON.stringify(result)).toBeNull();
  expect(result.errors, JSON.stringify(result).slice(0, 500)).toHaveLength(1);
  const [error] = result.errors!;
  expect(error!.extensions?.code).toBe('OPERATION_TOO_COMPLEX');
  // Which limit, and where it sits, stays the server's business.
  expect(error!.message).not.toMatch(/\d|depth|alias|directive|token|cost|limit/i);
}

describe(`query limits (${databaseKind})`, () => {
  let server: TestServer;
  let user: TestUser;
  let ws: Client;

  beforeAll(async () => {
    server = await startTestServer();
    user = await signUp(server);
    ws = wsClient(server.url, user.accessToken);
  });

  afterAll(async () => {
    await ws?.dispose();
    await server?.stop();
  });

  it('lets every operation of the client contract through the default limits', async () => {
    // A user of its own: the contract includes signOut.
    const other = await signUp(server);
    const contract = parse(readFileSync(new URL('../contract/operations.graphql', import.meta.url), 'utf8'));
    const fragments = contract.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION);
    const operations = contract.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
    expect(operations.length).toBeGreaterThan(15);
    for (const operation of operations) {
      const used = fragments.filter((f) => print(operation).includes(`...${f.name.value}`) || fragments.some((g) => print(g).includes(`...${f.name.value}`)));
      const query = print({ kind: Kind.DOCUMENT, definitions: [operation, ...used] });
      const response = (await (await other.client.post({ query, variables: {} })).json()) as Result;
      const codes = (response.errors ?? []).map((e) => e.extensions?.code);
      expect(codes, `${operation.name?.value}: ${JSON.stringify(response.errors)}`).not.toContain('OPERATION_TOO_COMPLEX');
    }
    // A full page with members is a normal request, not an attack.
    const page = await user.client.post({
      query: '{ projects(first: 100) { totalCount edges { cursor node { id name description target viewerRole createdAt updatedAt archivedAt members { role user { id email } } } } } }',
    });
    expect(((await page.json()) as Result).errors).toBeUndefined();
  });

  it('accepts an operation exactly at the depth limit', async () => {
    const query = `query AtLimit($id: ID!) { generation(id: $id) { ${parents(8)} } }`;
    const response = (await (await user.client.post({ query, variables: { id: 'x' } })).json()) as Result;
    expect(response).toEqual({ data: { generation: null } });
  });

  for (const [limit, { query, variables }] of Object.entries(overLimit)) {
    it(`refuses an operation over the ${limit} limit over HTTP, SSE and graphql-ws, and the socket stays open`, async () => {
      expectTooComplex((await (await user.client.post({ query, variables })).json()) as Result);

      const sse = await user.client.post({ query, variables }, { accept: 'text/event-stream' });
      const events = await sse.text();
      expect(events).toContain('OPERATION_TOO_COMPLEX');
      expect(events).not.toContain('"data":{');

      expectTooComplex(await overWs(ws, query, variables));
      // The refusal failed that operation only.
      expect(await overWs(ws, 'query Me { viewer { id } }')).toEqual({ data: { viewer: { id: user.id } } });
    });
  }

  it('refuses a 50 MB body with 413 before reading it, and a chunked one too', async () => {
    const huge = JSON.stringify({ query: '{ viewer { id } }', variables: { padding: 'x'.repeat(50 * 1024 * 1024) } });
    const declared = await fetch(`${server.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: huge }).catch(
      (error: unknown) => error as Error,
    );
    if (declared instanceof Error) throw declared;
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({ errors: [{ extensions: { code: 'REQUEST_ENTITY_TOO_LARGE' } }] });

    // Without Content-Length the bytes are counted as they arrive (useChunkedBodyLimit),
    // whichever JSON media type picked the parser.
    for (const mediaType of ['application/json', 'application/graphql-response+json']) {
      const chunk = new TextEncoder().encode(' '.repeat(64 * 1024));
      let sent = 0;
      const stream = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent === 0) controller.enqueue(new TextEncoder().encode('{"query":"{ viewer { id } }","variables":{"p":"'));
          if (sent > 4 * 1024 * 1024) return controller.close();
          sent += chunk.length;
          controller.enqueue(chunk);
        },
      });
      const chunked = await fetch(`${server.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': mediaType },
        body: stream,
        duplex: 'half',
      } as RequestInit);
      expect(chunked.status, mediaType).toBe(413);
      // The rest of the upload is not read: the connection closes after the answer.
      expect(chunked.headers.get('connection'), mediaType).toBe('close');
      expect(await chunked.json()).toMatchObject({ errors: [{ extensions: { code: 'REQUEST_ENTITY_TOO_LARGE' } }] });
    }

    // A chunked body within the limit is answered like any other.
    const small = new TextEncoder().encode(JSON.stringify({ query: 'query Me { viewer { id } }' }));
    const within = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${user.accessToken}` },
      body: new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(small.subarray(0, 7));
          controller.enqueue(small.subarray(7));
          controller.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    expect(await within.json()).toEqual({ data: { viewer: { id: user.id } } });

    // The server is fine afterwards.
    expect((await user.client.expectNoErrors(ProjectsDocument, {})).projects.totalCount).toBe(0);
  });

  it('closes a graphql-ws socket that sends a 50 MB message (1009), without affecting others', async () => {
    const socket = new WebSocket(`${server.url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.once('open', () => {
        socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${user.accessToken}` } }));
        socket.once('message', () => resolve()); // connection_ack
      });
    });
    socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: `{ viewer { id } } #${'x'.repeat(50 * 1024 * 1024)}` } }));
    expect(await closed).toBe(1009);
    expect(await overWs(ws, 'query Me { viewer { id } }')).toEqual({ data: { viewer: { id: user.id } } });
  });

  it('refuses a batch of 100 operations as a whole and runs none of them', async () => {
    const batch = Array.from({ length: 100 }, (_, i) => ({
      query: 'mutation Make($name: String!) { createProject(input: { name: $name, target: WEB }) { __typename } }',
      variables: { name: `batched ${i}` },
    }));
    const response = await user.client.post(batch);
    expect(response.status).toBe(400);
    expect(JSON.stringify(await response.json())).not.toContain('createProject');
    expect((await user.client.expectNoErrors(ProjectsDocument, {})).projects.totalCount).toBe(0);
  });
});

describe(`persisted operations only (${databaseKind})`, () => {
  const viewerQuery = 'query Viewer { viewer { id email } }';
  const viewerHash = createHash('sha256').update(viewerQuery).digest('hex');
  const signUpQuery =
    'mutation SignUp($email: String!, $password: String!) { signUp(input: { email: $email, password: $password }) { __typename ... on AuthSession { accessToken user { id } } } }';
  const signUpHash = createHash('sha256').update(signUpQuery).digest('hex');
  const updatedQuery = 'subscription Updated($id: ID!) { generationUpdated(id: $id) { id status } }';
  const updatedHash = createHash('sha256').update(updatedQuery).digest('hex');
  let dir: string;
  let server: TestServer;
  let token: string;
  let userId: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-manifest-'));
    const manifest = path.join(dir, 'persisted-documents.json');
    // The shape codegen's client preset writes with `persistedDocuments: true`.
    await writeFile(manifest, JSON.stringify({ [viewerHash]: viewerQuery, [signUpHash]: signUpQuery, [updatedHash]: updatedQuery }));
    server = await startTestServer({ PERSISTED_OPERATIONS_ONLY: 'true', PERSISTED_OPERATIONS_MANIFEST: manifest });
    const response = (await (
      await server.client().post({ documentId: signUpHash, variables: { email: `pq-${Date.now()}@example.com`, password: 'correct horse battery staple' } })
    ).json()) as { data: { signUp: { accessToken: string; user: { id: string } } } };
    token = response.data.signUp.accessToken;
    userId = response.data.signUp.user.id;
  });

  afterAll(async () => {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs a listed operation by documentId or by Apollo persisted-query hash', async () => {
    const byId = await server.client(token).post({ documentId: `sha256:${viewerHash}` });
    expect(await byId.json()).toEqual({ data: { viewer: { id: userId, email: expect.any(String) } } });
    const byExtension = await server.client(token).post({ extensions: { persistedQuery: { version: 1, sha256Hash: viewerHash } } });
    expect(await byExtension.json()).toMatchObject({ data: { viewer: { id: userId } } });
  });

  it("counts an SSE subscription's body as sent, though the manifest's document takes the place of its params", async () => {
    const body = `{"documentId":"${updatedHash}",${' '.repeat(20_000)}"variables":{"id":"${randomUUID()}"}}`;
    const response = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body,
    });
    const data = /^data: (\{.*)$/m.exec(await response.text())?.[1];
    expect(JSON.parse(data ?? 'null')).toMatchObject({ errors: [{ extensions: { code: 'SUBSCRIPTION_TOO_LARGE' } }] });
  });

  it('refuses a document sent as text, an unknown id and a request without one', async () => {
    for (const body of [{ query: '{ viewer { id } }' }, { query: viewerQuery }, { documentId: 'f'.repeat(64) }, { variables: {} }]) {
      const response = await server.client(token).post(body);
      const result = (await response.json()) as Result;
      expect(result.data ?? null, JSON.stringify(body)).toBeNull();
      expect(result.errors?.[0]?.extensions?.code, JSON.stringify(result)).toBe('PERSISTED_QUERY_ONLY');
    }
  });

  it('holds graphql-ws to the manifest documents too, and keeps the socket open', async () => {
    const ws = wsClient(server.url, token);
    try {
      const refused = await overWs(ws, '{ viewer { id } }');
      // As over HTTP: nothing of the server's own (Yoga's `http` status) in what the client sees.
      expect(refused.errors).toEqual([{ message: expect.any(String), extensions: { code: 'PERSISTED_QUERY_ONLY' } }]);
      expect(await overWs(ws, viewerQuery)).toMatchObject({ data: { viewer: { id: userId } } });
    } finally {
      await ws.dispose();
    }
  });
});
