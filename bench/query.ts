import { mkdtemp, rm } from 'node:fs/promises';
import { type IncomingMessage, type ServerResponse, Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { execute, parse, validate } from 'graphql';
import { createYoga } from 'graphql-yoga';
import { createAuthProvider } from '../src/auth/index.js';
import { type Context, type Services, bearerToken, contextFactory } from '../src/api/context.js';
import { schema } from '../src/api/schema/index.js';
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
// limits, logs and metrics, Pothos, parse/validate cache) adds per request. A third side is
// Yoga with the same schema and context but none of Kiln's plugins or routes: what the
// GraphQL framework alone costs, so kiln/yoga is what Kiln's own code adds on top. A fourth
// runs graphql-js's execute on the same schema and context straight from node:http (the
// document parsed and validated once): what execution costs with no HTTP framework. The sides
// take turns a second at a time: run one after the other, whichever went second was faster
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
  // The same schema and context factory in Yoga as it comes: no Kiln plugin, route or limit.
  // The projects query reaches none of the services left out.
  const createContext = contextFactory({ config, database, auth, logger: createLogger('silent') } as Services);
  const plainYoga = createServer(
    createYoga<object, Context>({
      schema,
      logging: false,
      context: ({ request }) => createContext({ requestId: 'bench', authorization: request.headers.get('authorization') }),
    }),
  );
  // The same schema, context and document, executed with no HTTP framework around it.
  const document = parse(PROJECTS_QUERY);
  const invalid = validate(schema, document);
  if (invalid.length > 0) throw new AggregateError(invalid, 'the projects query does not validate');
  const executeOnly = createServer((req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (part: Buffer) => parts.push(part));
    req.once('end', async () => {
      try {
        const { variables } = JSON.parse(Buffer.concat(parts).toString()) as { variables: Record<string, unknown> };
        const contextValue = await createContext({ requestId: 'bench', authorization: req.headers.authorization });
        const result = await execute({ schema, document, variableValues: variables, contextValue });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result));
      } catch (error) {
        res.writeHead(500).end(String(error));
      }
    });
  });
  const listening = async (server: typeof bare) => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  };
  const sides = [
    { name: 'kiln (graphql)', port: Number(new URL(kiln.url).port), path: '/graphql', load: newLoad() },
    { name: 'yoga, no plugins', port: await listening(plainYoga), path: '/graphql', load: newLoad() },
    { name: 'graphql-js only', port: await listening(executeOnly), path: '/', load: newLoad() },
    { name: 'bare node:http', port: await listening(bare), path: '/', load: newLoad() },
  ];
  const body = JSON.stringify({ query: PROJECTS_QUERY, variables: { first: PROJECTS } });

  log(`projects query, ${PROJECTS} projects, ${CONCURRENCY} in flight, ${SECONDS} s a side in turns of 1 s (PGlite, one process)`);
  // Warm every side (JIT, parse/validate cache, prepared statements), then measure.
  for (const side of sides) await load('warm-up', side.port, side.path, body, token, 1);
  for (let turn = 0; turn < SECONDS; turn++) {
    for (const side of sides) await load(side.name, side.port, side.path, body, token, 1, side.load);
  }
  const [kilnRun, yogaRun, executeRun, bareRun] = sides.map((side) => summary(side.name, side.load)) as [Run, Run, Run, Run];
  for (const run of [kilnRun, yogaRun, executeRun, bareRun]) {
    log(
      `  ${run.name.padEnd(16)} ${run.perSecond.toFixed(0).padStart(6)} req/s   p50 ${run.p50.toFixed(2)} ms   p99 ${run.p99.toFixed(2)} ms   CPU ${run.cpuMsPerRequest.toFixed(2)} ms/request   (${run.requests} requests)`,
    );
  }
  const ratio = (over: Run, under: Run) =>
    `throughput ${(over.perSecond / under.perSecond).toFixed(2)}x, p99 ${(over.p99 / under.p99).toFixed(2)}x, CPU per request ${(over.cpuMsPerRequest / under.cpuMsPerRequest).toFixed(2)}x`;
  log(`  ratio kiln/yoga (what Kiln's plugins and routes add): ${ratio(kilnRun, yogaRun)}`);
  log(`  ratio yoga/bare (what the GraphQL framework costs): ${ratio(yogaRun, bareRun)}`);
  log(`  ratio graphql-js/bare (what execution alone costs): ${ratio(executeRun, bareRun)}`);
  log(`  ratio kiln/bare: ${ratio(kilnRun, bareRun)}`);

  await new Promise<void>((resolve) => plainYoga.close(() => resolve()));
  await new Promise<void>((resolve) => executeOnly.close(() => resolve()));
  await new Promise<void>((resolve) => bare.close(() => resolve()));
  await auth.close();
  await kiln.stop();
  await database.close();
  await rm(dataDir, { recursive: true, force: true });
}
