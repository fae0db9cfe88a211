import { mkdtemp, rm } from 'node:fs/promises';
import { type IncomingMessage, type ServerResponse, Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { createAuthProvider } from '../src/auth/index.js';
import { bearerToken } from '../src/api/context.js';
import { keysetConnection } from '../src/api/schema/paging.js';
import { parseConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { migrateDatabase } from '../src/db/migrate.js';
import { userScope } from '../src/db/scope.js';
import { startKiln } from '../src/main.js';
import { createLogger } from '../src/observability/logger.js';
import { listProjects } from '../src/projects/projects.js';

// What the GraphQL layer costs: the `projects` query (20 projects of a signed-in user)
// through Kiln over HTTP, against a bare node:http handler doing the same work without
// GraphQL: the same token verification, the same drizzle queries in the same RLS
// transaction on the same embedded PGlite, the same JSON shape, JSON.stringify. Same
// process, same run, so the ratio is what the GraphQL stack (Yoga, envelop plugins incl.
// limits, logs and metrics, Pothos, parse/validate cache) adds per request. The two take
// turns a second at a time: run one after the other, whichever went second was faster
// (a warmer JIT and WebAssembly tier-up), by about a tenth here.
//
// QUERY_SECONDS (5 per side), QUERY_CONCURRENCY (8 requests in flight), QUERY_PROJECTS (20).

const SECONDS = Number(process.env.QUERY_SECONDS ?? 5);
const CONCURRENCY = Number(process.env.QUERY_CONCURRENCY ?? 8);
const PROJECTS = Number(process.env.QUERY_PROJECTS ?? 20);
const log = (line: string) => process.stdout.write(`${line}\n`);

const PROJECTS_QUERY = `query Projects($first: Int, $after: String) {
  projects(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id name description target viewerRole createdAt updatedAt archivedAt } }
  }
}`;

interface Run {
  name: string;
  requests: number;
  perSecond: number;
  p50: number;
  p99: number;
  /** Process CPU (server and load generator) per request: steadier than throughput on a busy machine. */
  cpuMsPerRequest: number;
}

/** What turns of one side add up to. */
interface Load {
  latencies: number[];
  seconds: number;
  cpuMs: number;
}

const newLoad = (): Load => ({ latencies: [], seconds: 0, cpuMs: 0 });

/** Keeps CONCURRENCY POSTs in flight for `seconds`, adding to `into`; every answer must be 200 with PROJECTS edges. */
async function load(name: string, port: number, path: string, body: string, token: string, seconds: number, into: Load = newLoad()): Promise<Load> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const { latencies } = into;
  const post = () =>
    new Promise<void>((resolve, reject) => {
      const started = performance.now();
      const req = request(
        { port, path, method: 'POST', agent, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'content-length': Buffer.byteLength(body) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            if (res.statusCode !== 200 || (text.match(/"cursor"/g)?.length ?? 0) !== PROJECTS) {
              return reject(new Error(`${name}: unexpected answer ${res.statusCode} ${text.slice(0, 200)}`));
            }
            latencies.push(performance.now() - started);
            resolve();
          });
        },
      );
      req.once('error', reject);
      req.end(body);
    });
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < until) await post();
    }),
  );
  into.seconds += (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  into.cpuMs += (cpu.user + cpu.system) / 1000;
  agent.destroy();
  return into;
}

function summary(name: string, { latencies, seconds, cpuMs }: Load): Run {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { name, requests: sorted.length, perSecond: sorted.length / seconds, p50: at(0.5), p99: at(0.99), cpuMsPerRequest: cpuMs / sorted.length };
}

export default async function bench(): Promise<void> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'kiln-bench-query-'));
  const config = parseConfig({ LOG_LEVEL: 'silent', DATA_DIR: dataDir });
  const database = await openDatabase({});
  await migrateDatabase(database);
  const kiln = await startKiln(config, { database, port: 0, logger: createLogger('silent') });
  const auth = await createAuthProvider(config.auth, database.db);

  const graphql = async (query: string, variables: Record<string, unknown>, token?: string) => {
    const response = await fetch(`${kiln.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    return (await response.json()) as { data: Record<string, any> };
  };
  const { data } = await graphql(
    'mutation($email: String!, $password: String!) { signUp(input: { email: $email, password: $password }) { ... on AuthSession { accessToken } } }',
    { email: `bench-${Date.now()}@example.com`, password: 'correct horse battery staple' },
  );
  const token = data.signUp.accessToken as string;
  for (let i = 0; i < PROJECTS; i++) {
    await graphql('mutation($name: String!) { createProject(input: { name: $name, target: WEB, description: "A project for the benchmark" }) { __typename } }', { name: `Project ${i}` }, token);
  }

  // The same work without GraphQL.
  const bare = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.once('end', async () => {
      try {
        const claims = await auth.verify(bearerToken(req.headers.authorization) ?? '');
        const scope = userScope(database.db, claims);
        const page = await keysetConnection({ first: PROJECTS }, (keyset) => listProjects(scope, keyset));
        const body = JSON.stringify({
          data: {
            projects: {
              totalCount: page.totalCount,
              pageInfo: { hasNextPage: page.pageInfo.hasNextPage, endCursor: page.pageInfo.endCursor },
              edges: page.edges.map(({ cursor, node }) => ({
                cursor,
                node: {
                  id: encodeGlobalID('Project', node.id),
                  name: node.name,
                  description: node.description,
                  target: node.target,
                  viewerRole: (node.viewerRole ?? 'viewer').toUpperCase(),
                  createdAt: node.createdAt.toISOString(),
                  updatedAt: node.updatedAt.toISOString(),
                  archivedAt: node.archivedAt?.toISOString() ?? null,
                },
              })),
            },
          },
        });
        res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      } catch (error) {
        res.writeHead(500).end(String(error));
      }
    });
  });
  await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
  const barePort = (bare.address() as AddressInfo).port;
  const kilnPort = Number(new URL(kiln.url).port);
  const body = JSON.stringify({ query: PROJECTS_QUERY, variables: { first: PROJECTS } });

  log(`projects query, ${PROJECTS} projects, ${CONCURRENCY} in flight, ${SECONDS} s a side in turns of 1 s (PGlite, one process)`);
  // Warm both (JIT, parse/validate cache, prepared statements), then measure.
  await load('warm-up', kilnPort, '/graphql', body, token, 1);
  await load('warm-up', barePort, '/', body, token, 1);
  const kilnLoad = newLoad();
  const bareLoad = newLoad();
  for (let turn = 0; turn < SECONDS; turn++) {
    await load('kiln (graphql)', kilnPort, '/graphql', body, token, 1, kilnLoad);
    await load('bare node:http', barePort, '/', body, token, 1, bareLoad);
  }
  const runs = [summary('kiln (graphql)', kilnLoad), summary('bare node:http', bareLoad)];
  for (const run of runs) {
    log(
      `  ${run.name.padEnd(16)} ${run.perSecond.toFixed(0).padStart(6)} req/s   p50 ${run.p50.toFixed(2)} ms   p99 ${run.p99.toFixed(2)} ms   CPU ${run.cpuMsPerRequest.toFixed(2)} ms/request   (${run.requests} requests)`,
    );
  }
  const [graphqlRun, bareRun] = runs as [Run, Run];
  log(
    `  ratio kiln/bare: throughput ${(graphqlRun.perSecond / bareRun.perSecond).toFixed(2)}x, p99 ${(graphqlRun.p99 / bareRun.p99).toFixed(2)}x, CPU per request ${(graphqlRun.cpuMsPerRequest / bareRun.cpuMsPerRequest).toFixed(2)}x`,
  );

  await new Promise<void>((resolve) => bare.close(() => resolve()));
  await auth.close();
  await kiln.stop();
  await database.close();
  await rm(dataDir, { recursive: true, force: true });
}
