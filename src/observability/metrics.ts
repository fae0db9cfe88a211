import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type DocumentNode, Kind, getOperationAST, parse } from 'graphql';
import { type Plugin, isAsyncIterable } from 'graphql-yoga';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { TIMED_OUT, within } from '../deadlines.js';
import { ACTIVE_STATUSES } from '../generations/status.js';
import type { Logger } from './logger.js';

// Prometheus metrics (prom-client), served on /metrics. One registry per Kiln, so
// several instances in one process (tests) never share or double-register series.
// Database-backed gauges (active generations by status, queue depth) are read at scrape
// time with one grouped count over the partial index of active statuses: a scrape never
// scans the table. Terminal outcomes are counters (kiln_generation_duration_seconds_count).

export interface Metrics {
  readonly registry: Registry;
  /** One HTTP request answered (not WebSocket frames). */
  observeHttp(labels: { method: string; route: string; status: number }, seconds: number): void;
  /**
   * The GraphQL plugin: operation counts and durations, active subscriptions. Operations are
   * labelled by name only when Kiln knows the name (the client contract, the web client's
   * operations, and `documents`: the persisted-operations manifest when only those run).
   */
  graphqlPlugin(options?: { documents?: Iterable<string> }): Plugin;
  /** A generation reached a terminal status. */
  observeGeneration(labels: { status: string; errorCode?: string | null; provider: string }, seconds: number): void;
  observeBuildStep(labels: { step: string; status: string }, seconds: number): void;
  observeTokens(provider: string, usage: { inputTokens: number; outputTokens: number }): void;
  /** A self-healing fix round ended (succeeded, failed, no_progress, no_change, budget, cancelled, error). */
  observeFixRound(outcome: string): void;
  /** Tokens of one answer, by round kind: `initial` (round 0) or `fix`. */
  observeRoundTokens(kind: 'initial' | 'fix', usage: { inputTokens: number; outputTokens: number }): void;
  /** A throttled or unavailable provider answer that is retried after a wait. */
  observeLlmRetry(provider: string, status: number | 'network'): void;
  /** A request turned away by a rate limit or a cap, before it did anything. */
  observeRefusal(limit: RefusalLimit): void;
}

/**
 * What turns a request away (kiln_refusals_total): a rate limit or a cap, named as its variable
 * (RATE_LIMIT_AUTH_PER_IP is auth_per_ip, LIVE_STREAMS_PER_USER live_streams_per_user), too many
 * sign-ins and sign-ups hashing at once, too many archive downloads at once, too many preview
 * downloads of one generation at once.
 */
export const REFUSAL_LIMITS = [
  'auth_per_ip',
  'auth_per_email',
  'sign_in_hashing',
  'generations_per_user',
  'generations_per_ip',
  'members_per_user',
  'members_per_ip',
  'refresh_per_ip',
  'live_streams_per_user',
  'live_streams_per_address',
  'max_active_generations_per_user',
  'ws_max_subscriptions',
  'archive_downloads',
  'preview_downloads',
] as const;
export type RefusalLimit = (typeof REFUSAL_LIMITS)[number];

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const LONG_BUCKETS = [0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200];
/**
 * The operations Kiln knows by name, whose names are metric labels; any other name counts as
 * `other`, since a client (signed in or not) chooses the name it sends. The client contract
 * and the reference web client's operations (it runs a few beyond the contract), read once
 * per createMetrics. Found from this module's URL, as drizzle/ and web/dist/ are: the server
 * runs from its checkout (`npm install && npm start`: no package "files", no image), and
 * dist/ and dist/bundle/ sit at the depth of src/, so the path resolves alike from each.
 */
const KNOWN_OPERATION_FILES = ['../../contract/operations.graphql', '../../web/src/operations.graphql'];

/**
 * Counts of active generations by status, read at scrape time (main.ts hands in the generations
 * store's query). It should fail at once when the database is down rather than ride out the outage.
 */
export type ActiveGenerationCounts = () => Promise<Map<string, number>>;

/**
 * How long a scrape waits for those counts before it answers without them: well within
 * Prometheus' 10 s default scrape timeout, so a database that hangs (a half-open connection)
 * costs two gauges, not every series.
 */
export const SCRAPE_READ_TIMEOUT_MS = 2_000;

export function createMetrics(options: { activeGenerations?: ActiveGenerationCounts; logger?: Logger; defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const log = options.logger?.child({ source: 'Metrics' });

  const httpRequests = new Counter({
    name: 'kiln_http_requests_total',
    help: 'HTTP requests answered, by method, route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: 'kiln_http_request_duration_seconds',
    help: 'Time from request to the end of the response (SSE streams included), by method, route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  const operations = new Counter({
    name: 'kiln_graphql_operations_total',
    help: 'GraphQL operations executed or subscribed, by name, type and outcome (ok or error), on every transport.',
    labelNames: ['operation', 'type', 'outcome'] as const,
    registers: [registry],
  });
  const operationDuration = new Histogram({
    name: 'kiln_graphql_operation_duration_seconds',
    help: 'Execution time of GraphQL queries and mutations, by name and type.',
    labelNames: ['operation', 'type'] as const,
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  const activeSubscriptions = new Gauge({
    name: 'kiln_graphql_active_subscriptions',
    help: 'Subscriptions streaming now (graphql-ws and SSE), by name.',
    labelNames: ['operation'] as const,
    registers: [registry],
  });
  const generationDuration = new Histogram({
    name: 'kiln_generation_duration_seconds',
    help: 'Time from claim to terminal status of generations run by this process, by status, error code and provider.',
    labelNames: ['status', 'error_code', 'provider'] as const,
    buckets: LONG_BUCKETS,
    registers: [registry],
  });
  const buildStepDuration = new Histogram({
    name: 'kiln_build_step_duration_seconds',
    help: 'Build step run time, by step and status.',
    labelNames: ['step', 'status'] as const,
    buckets: LONG_BUCKETS,
    registers: [registry],
  });
  const llmTokens = new Counter({
    name: 'kiln_llm_tokens_total',
    help: 'LLM tokens used by generations run by this process, by provider and kind (input or output).',
    labelNames: ['provider', 'kind'] as const,
    registers: [registry],
  });
  const fixRounds = new Counter({
    name: 'kiln_fix_rounds_total',
    help: 'Self-healing fix rounds run by this process, by outcome.',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const roundTokens = new Counter({
    name: 'kiln_llm_round_tokens_total',
    help: 'LLM tokens by round kind (initial: the first answer; fix: self-healing rounds) and direction (input or output).',
    labelNames: ['round_kind', 'kind'] as const,
    registers: [registry],
  });
  const llmRetries = new Counter({
    name: 'kiln_llm_retries_total',
    help: 'Provider answers (429, 503, …) retried after a back-off, by provider and status.',
    labelNames: ['provider', 'status'] as const,
    registers: [registry],
  });
  const refusals = new Counter({
    name: 'kiln_refusals_total',
    help: 'Requests turned away by a rate limit or a cap, by limit (auth_per_ip, sign_in_hashing, live_streams_per_user, …).',
    labelNames: ['limit'] as const,
    registers: [registry],
  });
  // Every limit has a series from the start: a rate() over a series that appears only at the first refusal misses it.
  for (const limit of REFUSAL_LIMITS) refusals.inc({ limit }, 0);

  const activeGenerations = options.activeGenerations;
  if (activeGenerations) {
    // One wait per scrape feeds both gauges; failed or late, both are left out of the answer.
    // One read at a time, however long it takes: a read a late scrape left behind still holds
    // a connection, and a new one per scrape would take the pool one by one.
    let reading: Promise<Map<string, number>> | undefined;
    const read = () => {
      if (!reading) {
        reading = activeGenerations().finally(() => (reading = undefined));
        reading.catch(() => {}); // a failure after the scrape answered is nobody's to report
      }
      return reading;
    };
    let pending: Promise<Map<string, number> | undefined> | undefined;
    const statusCounts = () =>
      (pending ??= within(read(), SCRAPE_READ_TIMEOUT_MS)
        .then((counts) => {
          if (counts === TIMED_OUT) throw new Error(`no answer within ${SCRAPE_READ_TIMEOUT_MS} ms`);
          return counts;
        })
        .catch((error: unknown) => {
          log?.warn({ err: error }, 'reading generation counts for /metrics failed: the generation gauges are left out');
          return undefined;
        })
        .finally(() => {
          pending = undefined; // both gauges of this scrape already hold the promise
        }));
    new Gauge({
      name: 'kiln_generations',
      help: 'Active generations in the database (QUEUED, RUNNING), read at scrape time.',
      labelNames: ['status'] as const,
      registers: [registry],
      async collect() {
        const counts = await statusCounts();
        // Unknown is no sample, not the last scrape's counts.
        if (!counts) return this.reset();
        for (const status of ACTIVE_STATUSES) this.set({ status }, counts.get(status) ?? 0);
      },
    });
    new Gauge({
      name: 'kiln_queue_depth',
      help: 'Generations waiting for a worker (QUEUED), read at scrape time.',
      registers: [registry],
      async collect() {
        const counts = await statusCounts();
        // reset() would leave an unlabelled gauge at 0: removing its one series leaves no sample.
        if (!counts) return this.remove({});
        this.set(counts.get('QUEUED') ?? 0);
      },
    });
  }

  const knownNames = new Set<string>();
  for (const file of KNOWN_OPERATION_FILES) {
    const url = new URL(file, import.meta.url);
    try {
      for (const name of namesIn(parse(readFileSync(url, 'utf8'), { noLocation: true }))) knownNames.add(name);
    } catch (error) {
      log?.warn({ err: error, file: url.pathname }, 'known GraphQL operations cannot be read: their metrics count as "other"');
    }
  }
  const describeWith = (names: ReadonlySet<string>) => (document: DocumentNode, operationName?: string | null) => {
    const operation = getOperationAST(document, operationName);
    const name = operation?.name?.value;
    return { operation: !name ? 'anonymous' : names.has(name) ? name : 'other', type: operation?.operation ?? 'unknown' };
  };
  const outcome = (result: unknown) => ((result as { errors?: unknown[] } | undefined)?.errors?.length ? 'error' : 'ok');

  return {
    registry,
    observeHttp: ({ method, route, status }, seconds) => {
      const labels = { method, route, status: String(status) };
      httpRequests.inc(labels);
      httpDuration.observe(labels, seconds);
    },
    graphqlPlugin: ({ documents = [] } = {}) => {
      const describe = describeWith(new Set([...knownNames, ...operationNames(documents)]));
      return {
        onExecute({ args }) {
          const labels = describe(args.document, args.operationName);
          const started = performance.now();
          return {
            onExecuteDone({ result }) {
              operationDuration.observe(labels, (performance.now() - started) / 1000);
              operations.inc({ ...labels, outcome: isAsyncIterable(result) ? 'ok' : outcome(result) });
            },
          };
        },
        onSubscribe({ args }) {
          const labels = describe(args.document, args.operationName);
          return {
            onSubscribeResult({ result }) {
              if (!isAsyncIterable(result)) {
                operations.inc({ ...labels, outcome: outcome(result) });
                return;
              }
              operations.inc({ ...labels, outcome: 'ok' });
              activeSubscriptions.inc({ operation: labels.operation });
              // A live stream says when it is over, however it ends (completed, failed, closed):
              // envelop's onEnd would wrap every result of every stream once more.
              const { closed } = result as { closed?: Promise<void> };
              if (closed) void closed.then(() => activeSubscriptions.dec({ operation: labels.operation }));
              else return { onEnd: () => activeSubscriptions.dec({ operation: labels.operation }) };
            },
          };
        },
      };
    },
    observeGeneration: ({ status, errorCode, provider }, seconds) =>
      generationDuration.observe({ status, error_code: errorCode ?? '', provider }, seconds),
    observeBuildStep: (labels, seconds) => buildStepDuration.observe(labels, seconds),
    observeTokens: (provider, usage) => {
      if (usage.inputTokens > 0) llmTokens.inc({ provider, kind: 'input' }, usage.inputTokens);
      if (usage.outputTokens > 0) llmTokens.inc({ provider, kind: 'output' }, usage.outputTokens);
    },
    observeFixRound: (outcome) => fixRounds.inc({ outcome }),
    observeRoundTokens: (roundKind, usage) => {
      if (usage.inputTokens > 0) roundTokens.inc({ round_kind: roundKind, kind: 'input' }, usage.inputTokens);
      if (usage.outputTokens > 0) roundTokens.inc({ round_kind: roundKind, kind: 'output' }, usage.outputTokens);
    },
    observeLlmRetry: (provider, status) => llmRetries.inc({ provider, status: String(status) }),
    observeRefusal: (limit) => refusals.inc({ limit }),
  };
}

/** The names of the operations in GraphQL documents (a document that does not parse names none). */
export function operationNames(documents: Iterable<string>): Set<string> {
  const names = new Set<string>();
  for (const text of documents) {
    let document: DocumentNode;
    try {
      document = parse(text, { noLocation: true });
    } catch {
      continue;
    }
    for (const name of namesIn(document)) names.add(name);
  }
  return names;
}

function namesIn(document: DocumentNode): string[] {
  return document.definitions.flatMap((definition) => (definition.kind === Kind.OPERATION_DEFINITION && definition.name ? [definition.name.value] : []));
}

/** Which route a path counts under: a fixed set, so clients cannot invent label values. */
export function routeOf(path: string | undefined): string {
  return path === '/graphql' || path === '/health' || path === '/ready' || path === '/metrics' ? path : 'other';
}

/** Times every HTTP request from arrival to the end of its response. */
export function observeRequest(metrics: Metrics, req: IncomingMessage, res: ServerResponse, route: string): void {
  const started = performance.now();
  const method = ['GET', 'POST', 'OPTIONS', 'HEAD'].includes(req.method ?? '') ? req.method! : 'other';
  res.once('close', () => metrics.observeHttp({ method, route, status: res.statusCode }, (performance.now() - started) / 1000));
}

/** GET /metrics in Prometheus' text format; with METRICS_TOKEN set, only for `Authorization: Bearer <token>`. */
export async function serveMetrics(metrics: Metrics, token: string | undefined, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (token && !sameSecret(bearerToken(req.headers.authorization), token)) {
    res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' }).end('Unauthorized');
    return;
  }
  try {
    const body = await metrics.registry.metrics();
    res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body);
  } catch {
    res.writeHead(500, { 'content-type': 'text/plain' }).end('Metrics are unavailable.');
  }
}

/** The credentials of `Authorization: Bearer <token>`; the scheme's name is case-insensitive (RFC 9110 11.1). */
function bearerToken(authorization: string | undefined): string {
  const match = /^bearer +(.*)$/i.exec(authorization ?? '');
  return match ? match[1]! : '';
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
