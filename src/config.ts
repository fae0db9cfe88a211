import path from 'node:path';
import { z } from 'zod';
import { MAX_TIMER_MS } from './deadlines.js';

// The one place that reads the environment (STYLE 12): every variable parsed once,
// every problem reported together.

// A blank variable is an unset one (parseConfig drops it), but for NODE_ENV: `PORT=` is 4000,
// not port 0, and `DATA_DIR=` the default folder, not the working directory.
const optional = z
  .string()
  .optional()
  .transform((v) => v?.trim());
const int = (fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max).default(fallback);
/** A timer's delay, in milliseconds or (`unitMs` 1000) seconds: at most what setTimeout takes, past which it would fire at once. */
const delay = (fallback: number, min: number, unitMs = 1) => int(fallback, min, Math.floor(MAX_TIMER_MS / unitMs));
/** A lifetime that becomes a date (a token's expiry, a session's end): at most ten years, which every date type holds. */
const lifetimeSeconds = (fallback: number) => int(fallback, 1, 315_360_000);
/** What an API key can be: it travels in an HTTP header (`Bearer <key>`), where a line break, a space or non-ASCII breaks every request. */
export const API_KEY_CHARACTERS = /^[\x21-\x7E]*$/;
export const API_KEY_CHARACTERS_MESSAGE = 'An API key is printable ASCII with no spaces';
const apiKey = optional.refine((v) => v === undefined || API_KEY_CHARACTERS.test(v), API_KEY_CHARACTERS_MESSAGE);
const maxTokensMessage = "a whole number of tokens, 1 or more (unset sends no max_tokens: the server's own limit holds)";
const list = optional.transform((v) => (v ? v.split(',').map((s) => s.trim()).filter(Boolean) : []));
const flag = z.enum(['true', 'false']).optional();
/** The exporters @opentelemetry/sdk-node builds from OTEL_TRACES_EXPORTER, spelt exactly so: any other name it skips with a diag warning nobody sees. */
const TRACE_EXPORTERS = ['otlp', 'console', 'zipkin'];
/** A rate limit as `COUNT/SECONDS` (e.g. `10/600`), or `off`. */
const rate = (fallback: string) =>
  z
    .string()
    .trim()
    .regex(/^(off|[1-9]\d*\/[1-9]\d*)$/, 'use COUNT/SECONDS (e.g. 10/600) or off')
    .default(fallback)
    .transform((v) => (v === 'off' ? null : { limit: Number(v.split('/')[0]), windowSeconds: Number(v.split('/')[1]) }));

const environment = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: int(4000, 0, 65535),
  HOST: z.string().default('127.0.0.1'),
  DATA_DIR: optional.transform((v) => v ?? './.kiln'),
  DATABASE_URL: optional,
  MIGRATE_ON_START: z.enum(['true', 'false']).default('true'),
  DATABASE_POOL_MAX: int(10, 1),
  AUTH_PROVIDER: z.enum(['local', 'supabase']).default('local'),
  SUPABASE_URL: optional,
  SUPABASE_ANON_KEY: optional,
  SUPABASE_SERVICE_ROLE_KEY: optional,
  SUPABASE_JWT_SECRET: optional,
  SUPABASE_AUTH_TIMEOUT_MS: delay(10_000, 100),
  ACCESS_TOKEN_TTL_SECONDS: lifetimeSeconds(3600),
  SESSION_MAX_AGE_SECONDS: lifetimeSeconds(2_592_000),
  AUTH_JWT_SECRET: optional,
  KILN_ENCRYPTION_KEY: optional,
  LLM_PROVIDER: z.enum(['offline', 'gemini', 'openai']).default('offline'),
  GEMINI_API_KEY: apiKey,
  GEMINI_MODEL: z.string().default('gemini-2.5-flash'),
  GEMINI_BASE_URL: optional,
  OPENAI_BASE_URL: optional,
  OPENAI_API_KEY: apiKey,
  OPENAI_MODEL: optional,
  // unset: no max_tokens is sent (vLLM refuses a prompt plus max_tokens beyond the model's context)
  OPENAI_MAX_TOKENS: z.coerce
    .number({ error: maxTokensMessage })
    .int({ error: maxTokensMessage })
    .min(1, { error: maxTokensMessage })
    .max(Number.MAX_SAFE_INTEGER, { error: maxTokensMessage })
    .optional(),
  OFFLINE_CHUNK_DELAY_MS: delay(15, 0),
  // self-healing builds and an LLM run that needs no babysitting
  AUTO_FIX_MAX_ROUNDS: z.coerce.number().int().min(0).max(5).default(2),
  LLM_MAX_CONTINUATIONS: int(2, 0, 10),
  LLM_RETRY_MAX_ATTEMPTS: int(3, 1),
  LLM_RETRY_MAX_WAIT_SECONDS: delay(60, 0, 1000),
  LLM_ANSWER_TIMEOUT_SECONDS: int(1800, 1, 86_400),
  WORKSPACES_DIR: optional,
  WORKSPACES_KEEP_PER_PROJECT: int(20, 1),
  FLUTTER_BIN: z.string().default('flutter'),
  NPM_BIN: z.string().default('npm'),
  BUILD_STEP_TIMEOUT_SECONDS: delay(600, 1, 1000),
  // the build sandbox: unset means bwrap where it works, so generated code never runs as the server
  BUILD_SANDBOX: optional.pipe(z.enum(['bwrap', 'none']).optional()),
  ALLOW_UNSANDBOXED_BUILDS: flag,
  BUILD_MEMORY_MB: int(4096, 64),
  BUILD_MAX_PROCESSES: int(512, 16),
  BUILD_MAX_WORKSPACE_MB: int(4096, 16),
  BUILD_TMP_MB: int(512, 16),
  BUILD_MIN_FREE_DISK_MB: int(512, 0),
  // a root server's build steps run as this host uid (and gid), never as root
  BUILD_SANDBOX_UID: optional.pipe(
    z.coerce
      .number<string | undefined>()
      .int()
      .nonnegative()
      .refine((uid) => uid !== 0, "BUILD_SANDBOX_UID=0 is root: the build steps would be the host's root user again; leave it unset (65520) or name an unused uid")
      .max(4_294_967_294)
      .refine((uid) => uid !== 65_534, "BUILD_SANDBOX_UID=65534 is nobody's, which other daemons run as too: name a uid of Kiln's own (unset: 65520)")
      .optional(),
  ),
  GENERATION_LEASE_SECONDS: delay(30, 2, 1000),
  WORKER_CONCURRENCY: int(2, 1),
  MAX_ACTIVE_GENERATIONS_PER_USER: int(3, 1),
  BUDGET_RESERVATION_TOKENS: int(20_000, 1),
  ROLE: z.enum(['all', 'api', 'worker']).default('all'),
  QUEUE: z.enum(['memory', 'pgboss']).default('memory'),
  EVENTS: z.enum(['memory', 'postgres', 'redis']).default('memory'),
  REDIS_URL: optional,
  // scale-out: a direct or session-mode connection for LISTEN, pg-boss's schema, worker shutdown
  LISTEN_DATABASE_URL: optional,
  PGBOSS_SCHEMA: z.string().regex(/^[a-z_][a-z0-9_]*$/, 'a lowercase SQL identifier').default('pgboss'),
  WORKER_SHUTDOWN_GRACE_SECONDS: int(20, 0, 86_400),
  CORS_ORIGINS: list,
  WS_CONNECTION_INIT_TIMEOUT_MS: delay(3000, 1),
  WS_MAX_SUBSCRIPTIONS: int(100, 1),
  WS_KEEPALIVE_MS: delay(12_000, 0),
  WS_AUTH_RECHECK_MS: delay(5000, 100),
  SUBSCRIPTION_BUFFER_LIMIT: int(1000, 1),
  STREAM_ACCESS_RECHECK_MS: delay(2000, 50),
  STREAM_POLL_MS: delay(2000, 50),
  LIVE_STREAMS_PER_USER: int(200, 1),
  LIVE_STREAMS_PER_ADDRESS: int(1000, 1),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  // hardening: request limits, production mode, rate limits, metrics
  MAX_REQUEST_BODY_BYTES: int(1_048_576, 1024),
  GRAPHQL_MAX_DEPTH: int(10, 1),
  GRAPHQL_MAX_ALIASES: int(15, 0),
  GRAPHQL_MAX_DIRECTIVES: int(10, 0),
  GRAPHQL_MAX_TOKENS: int(2000, 10),
  GRAPHQL_MAX_COST: int(50_000, 1),
  PERSISTED_OPERATIONS_ONLY: flag,
  PERSISTED_OPERATIONS_MANIFEST: optional,
  ALLOW_INTROSPECTION: flag,
  TRUST_PROXY: z.string().trim().regex(/^(true|false|[0-9]+)$/, 'use false, true or a number of proxy hops').default('false'),
  RATE_LIMIT_AUTH_PER_IP: rate('100/600'),
  RATE_LIMIT_AUTH_PER_EMAIL: rate('10/600'),
  RATE_LIMIT_GENERATIONS_PER_USER: rate('30/600'),
  RATE_LIMIT_GENERATIONS_PER_IP: rate('120/600'),
  RATE_LIMIT_MEMBERS_PER_USER: rate('60/60'),
  RATE_LIMIT_MEMBERS_PER_IP: rate('60/60'),
  RATE_LIMIT_REFRESH_PER_IP: rate('300/600'),
  METRICS_TOKEN: optional,
  // tracing (OpenTelemetry): off unless an exporter or an OTLP endpoint is named; the SDK reads the rest of OTEL_* itself
  OTEL_SDK_DISABLED: optional.transform((v) => v?.toLowerCase() === 'true'),
  // a list (`otlp,console`); `none` anywhere in it turns tracing off, as the SDK reads it
  OTEL_TRACES_EXPORTER: list
    .superRefine((names, context) => {
      for (const name of names.filter((name) => !TRACE_EXPORTERS.includes(name) && name.toLowerCase() !== 'none')) {
        context.addIssue({ code: 'custom', message: `"${name}" is no exporter the OpenTelemetry SDK knows: use ${TRACE_EXPORTERS.join(', ')} or none (in lower case; several comma-separated)` });
      }
    })
    .transform((names) => names.map((name) => name.toLowerCase())),
  OTEL_EXPORTER_OTLP_ENDPOINT: optional,
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: optional,
  OTEL_SERVICE_NAME: optional,
  // outputs (src/artifacts/): the artefact store, signed preview and archive URLs
  ARTIFACT_STORE: z.enum(['fs', 'postgres', 'supabase']).optional(),
  ARTIFACT_BUCKET: z.string().trim().min(1).default('kiln-artifacts'),
  SIGNED_URL_TTL_SECONDS: lifetimeSeconds(3600),
  PUBLIC_URL: optional,
  PREVIEW_ORIGIN: optional,
});

export type Environment = Record<string, string | undefined>;

/**
 * The host uid and gid of a root server's build steps unless BUILD_SANDBOX_UID names another:
 * below 65536, so it exists in a rootless container (whose user namespace maps 0–65535), in
 * Debian's reserved 65000–65533, past systemd's dynamic users (61184–65519), and not nobody's.
 */
export const DEFAULT_SANDBOX_UID = 65_520;

export function parseConfig(env: Record<string, string | undefined>) {
  // NODE_ENV is the exception: blank, it would quietly turn production's checks off.
  const given = Object.fromEntries(Object.entries(env).filter(([name, value]) => value?.trim() || name === 'NODE_ENV'));
  const parsed = environment.safeParse(given);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    // Every problem at once: the checks across variables too, on the others (each bad one as if
    // unset, so one may say again what a bad one needs: "needs X" beside X's own problem).
    const bad = new Set(parsed.error.issues.map((i) => String(i.path[0])));
    try {
      parseConfig(Object.fromEntries(Object.entries(given).filter(([name]) => !bad.has(name))));
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(...error.problems);
    }
    throw new ConfigError(problems);
  }
  const e = parsed.data;
  const problems: string[] = [];
  if (e.AUTH_PROVIDER === 'supabase' && (!e.SUPABASE_URL || !e.SUPABASE_ANON_KEY)) {
    problems.push('AUTH_PROVIDER=supabase needs SUPABASE_URL and SUPABASE_ANON_KEY');
  }
  if (e.LLM_PROVIDER === 'gemini' && !e.GEMINI_API_KEY) problems.push('LLM_PROVIDER=gemini needs GEMINI_API_KEY');
  if (e.LLM_PROVIDER === 'openai' && (!e.OPENAI_BASE_URL || !e.OPENAI_MODEL)) {
    problems.push('LLM_PROVIDER=openai needs OPENAI_BASE_URL and OPENAI_MODEL');
  }
  problems.push(...providerUrlProblems(e), ...corsOriginProblems(e), ...databaseUrlProblems(e));
  if ((e.EVENTS === 'redis') && !e.REDIS_URL) problems.push('EVENTS=redis needs REDIS_URL');
  // ioredis reads anything else as a host name or a socket path, and retries it for ever.
  if (e.EVENTS === 'redis' && e.REDIS_URL && !isUrlOf(e.REDIS_URL, ['redis:', 'rediss:'])) {
    problems.push('REDIS_URL must be a Redis URL: redis://[:password@]host:port[/db], or rediss:// for TLS');
  }
  // supabase-js throws at start-up on anything else, with a stack.
  if ((e.AUTH_PROVIDER === 'supabase' || e.ARTIFACT_STORE === 'supabase') && e.SUPABASE_URL && !isUrlOf(e.SUPABASE_URL, ['https:', 'http:'])) {
    problems.push("SUPABASE_URL must be an absolute http(s) URL: the project's URL, e.g. https://YOUR-PROJECT.supabase.co");
  }
  if ((e.QUEUE === 'pgboss' || e.EVENTS === 'postgres') && !e.DATABASE_URL) {
    problems.push('QUEUE=pgboss and EVENTS=postgres need DATABASE_URL (a shared PostgreSQL)');
  }
  if (e.AUTH_JWT_SECRET !== undefined && weakSecret(e.AUTH_JWT_SECRET)) {
    problems.push('AUTH_JWT_SECRET is too weak: use at least 32 random characters (e.g. `openssl rand -base64 48`), not a word or a repeated pattern');
  }
  problems.push(...unsafeInProduction(e));
  problems.push(...outputProblems(e));
  const encryptionKey = e.KILN_ENCRYPTION_KEY === undefined ? undefined : decodeKey(e.KILN_ENCRYPTION_KEY);
  if (encryptionKey === null) {
    problems.push('KILN_ENCRYPTION_KEY must be 32 random bytes, as 64 hex characters or base64 (standard or URL-safe, padded or not; e.g. `openssl rand -base64 32`)');
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const dataDir = path.resolve(e.DATA_DIR);
  const workspacesDir = path.resolve(e.WORKSPACES_DIR ?? path.join(dataDir, 'workspaces'));
  return {
    env: e.NODE_ENV,
    http: { port: e.PORT, host: e.HOST, corsOrigins: e.CORS_ORIGINS },
    websocket: {
      connectionInitTimeoutMs: e.WS_CONNECTION_INIT_TIMEOUT_MS,
      maxSubscriptions: e.WS_MAX_SUBSCRIPTIONS,
      keepAliveMs: e.WS_KEEPALIVE_MS,
      authRecheckMs: e.WS_AUTH_RECHECK_MS,
    },
    subscriptions: {
      bufferLimit: e.SUBSCRIPTION_BUFFER_LIMIT,
      /** How long a quiet live stream waits for the event bus before it checks the database anyway; doubles while quiet, up to 30 s (a longer one stays). */
      pollMs: e.STREAM_POLL_MS,
      /** How often every live stream's token and membership are checked again. */
      accessRecheckMs: e.STREAM_ACCESS_RECHECK_MS,
      /** Live streams (SSE streams, graphql-ws subscriptions) plus WebSocket connections one user may hold open. */
      maxLivePerUser: e.LIVE_STREAMS_PER_USER,
      /** The same, from one client address across all its users (an IPv4 address, an IPv6 /64). */
      maxLivePerAddress: e.LIVE_STREAMS_PER_ADDRESS,
    },
    dataDir,
    database: { url: e.DATABASE_URL, migrateOnStart: e.MIGRATE_ON_START === 'true', poolMax: e.DATABASE_POOL_MAX },
    auth: {
      provider: e.AUTH_PROVIDER,
      accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
      /** A local session ends this long after sign-in, however often it is refreshed. */
      sessionMaxAgeSeconds: e.SESSION_MAX_AGE_SECONDS,
      jwtSecret: e.AUTH_JWT_SECRET,
      supabase: {
        url: e.SUPABASE_URL,
        anonKey: e.SUPABASE_ANON_KEY,
        serviceRoleKey: e.SUPABASE_SERVICE_ROLE_KEY,
        jwtSecret: e.SUPABASE_JWT_SECRET,
        requestTimeoutMs: e.SUPABASE_AUTH_TIMEOUT_MS,
      },
    },
    /** Project secrets' key; unset means generated once under DATA_DIR (embedded) or secrets disabled. */
    encryptionKey: encryptionKey ?? undefined,
    llm: {
      provider: e.LLM_PROVIDER,
      gemini: { apiKey: e.GEMINI_API_KEY, model: e.GEMINI_MODEL, baseUrl: e.GEMINI_BASE_URL },
      openai: { baseUrl: e.OPENAI_BASE_URL, apiKey: e.OPENAI_API_KEY, model: e.OPENAI_MODEL, maxTokens: e.OPENAI_MAX_TOKENS },
      offlineChunkDelayMs: e.OFFLINE_CHUNK_DELAY_MS,
      /** Automatic continuations of an answer cut at the model's output limit. */
      maxContinuations: e.LLM_MAX_CONTINUATIONS,
      /** Back-off on 429/503: attempts in all, and the longest total wait. */
      retry: { maxAttempts: e.LLM_RETRY_MAX_ATTEMPTS, maxTotalWaitMs: e.LLM_RETRY_MAX_WAIT_SECONDS * 1000 },
      /** How long one answer part may keep streaming (the waits for the model, not Kiln's own time) before it is stopped. */
      answerTimeoutMs: e.LLM_ANSWER_TIMEOUT_SECONDS * 1000,
    },
    workspaces: {
      dir: workspacesDir,
      keepPerProject: e.WORKSPACES_KEEP_PER_PROJECT,
    },
    toolchain: {
      bins: { flutter: e.FLUTTER_BIN, npm: e.NPM_BIN },
      stepTimeoutMs: e.BUILD_STEP_TIMEOUT_SECONDS * 1000,
    },
    /** The build sandbox (DESIGN "Running untrusted code"). */
    buildSandbox: {
      /** Undefined: bwrap when the start-up probe finds it working, else none. */
      kind: e.BUILD_SANDBOX,
      allowUnsandboxed: e.NODE_ENV !== 'production' || e.ALLOW_UNSANDBOXED_BUILDS === 'true',
      limits: {
        memoryMb: e.BUILD_MEMORY_MB,
        maxProcesses: e.BUILD_MAX_PROCESSES,
        workspaceMb: e.BUILD_MAX_WORKSPACE_MB,
        tmpMb: e.BUILD_TMP_MB,
        minFreeDiskMb: e.BUILD_MIN_FREE_DISK_MB,
      },
      hiddenDirs: { DATA_DIR: dataDir, WORKSPACES_DIR: workspacesDir },
      /**
       * The host user (uid and gid alike) a root server's steps run as; `explicit` when
       * BUILD_SANDBOX_UID names it (then a server that cannot switch to it refuses to start).
       */
      stepUser: { uid: e.BUILD_SANDBOX_UID ?? DEFAULT_SANDBOX_UID, explicit: e.BUILD_SANDBOX_UID !== undefined },
    },
    generations: {
      leaseMs: e.GENERATION_LEASE_SECONDS * 1000,
      workerConcurrency: e.WORKER_CONCURRENCY,
      maxActivePerUser: e.MAX_ACTIVE_GENERATIONS_PER_USER,
      /** Tokens a run of a project with a monthly limit reserves at start, and takes more of at a time while it streams. */
      budgetReservationTokens: e.BUDGET_RESERVATION_TOKENS,
      /** Fix rounds of a generation started without maxFixRounds. */
      defaultMaxFixRounds: e.AUTO_FIX_MAX_ROUNDS,
      /** On SIGTERM a worker lets running generations finish this long, then hands them back. */
      shutdownGraceMs: e.WORKER_SHUTDOWN_GRACE_SECONDS * 1000,
    },
    role: e.ROLE,
    queue: e.QUEUE,
    pgBoss: { schema: e.PGBOSS_SCHEMA },
    events: { kind: e.EVENTS, redisUrl: e.REDIS_URL, listenUrl: e.LISTEN_DATABASE_URL },
    logLevel: e.LOG_LEVEL,
    limits: {
      maxBodyBytes: e.MAX_REQUEST_BODY_BYTES,
      maxDepth: e.GRAPHQL_MAX_DEPTH,
      maxAliases: e.GRAPHQL_MAX_ALIASES,
      maxDirectives: e.GRAPHQL_MAX_DIRECTIVES,
      maxTokens: e.GRAPHQL_MAX_TOKENS,
      maxCost: e.GRAPHQL_MAX_COST,
      /** Only operations of the manifest ({ id: document }, as codegen's client preset emits it). */
      persistedOperations: {
        only: e.PERSISTED_OPERATIONS_ONLY === 'true',
        manifest: e.PERSISTED_OPERATIONS_MANIFEST ? path.resolve(e.PERSISTED_OPERATIONS_MANIFEST) : undefined,
      },
    },
    /** Introspection, GraphiQL and "Did you mean" hints: on unless production, where ALLOW_INTROSPECTION=true turns them on. */
    exposeSchema: e.ALLOW_INTROSPECTION === undefined ? e.NODE_ENV !== 'production' : e.ALLOW_INTROSPECTION === 'true',
    /** How many reverse proxies in front of Kiln may be believed about the client's address (X-Forwarded-For). */
    trustedProxyHops: e.TRUST_PROXY === 'true' ? 1 : e.TRUST_PROXY === 'false' ? 0 : Number(e.TRUST_PROXY),
    rateLimits: {
      authPerIp: e.RATE_LIMIT_AUTH_PER_IP,
      authPerEmail: e.RATE_LIMIT_AUTH_PER_EMAIL,
      generationsPerUser: e.RATE_LIMIT_GENERATIONS_PER_USER,
      generationsPerIp: e.RATE_LIMIT_GENERATIONS_PER_IP,
      membersPerUser: e.RATE_LIMIT_MEMBERS_PER_USER,
      membersPerIp: e.RATE_LIMIT_MEMBERS_PER_IP,
      refreshPerIp: e.RATE_LIMIT_REFRESH_PER_IP,
    },
    /** When set, /metrics needs `Authorization: Bearer <token>`. */
    metrics: { token: e.METRICS_TOKEN },
    /**
     * OpenTelemetry traces: on when OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is
     * set, unless OTEL_SDK_DISABLED is true or OTEL_TRACES_EXPORTER says `none` (in any case, even
     * with an endpoint set). Exporter details (protocol, headers, sampler) are read from process.env
     * by the SDK itself (src/observability/tracing.ts).
     */
    tracing: {
      enabled:
        !e.OTEL_SDK_DISABLED &&
        !e.OTEL_TRACES_EXPORTER.includes('none') &&
        (e.OTEL_TRACES_EXPORTER.length > 0 || e.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined || e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined),
      serviceName: e.OTEL_SERVICE_NAME ?? 'kiln',
    },
    outputs: {
      /** Where artefact blobs live: fs under DATA_DIR (embedded), postgres (with DATABASE_URL) or Supabase Storage. */
      store: e.ARTIFACT_STORE ?? (e.DATABASE_URL ? 'postgres' : 'fs'),
      dir: path.join(dataDir, 'artifacts'),
      bucket: e.ARTIFACT_BUCKET,
      signedUrlTtlSeconds: e.SIGNED_URL_TTL_SECONDS,
      /** Base of absolute URLs; unset: the address Kiln listens on. */
      publicUrl: e.PUBLIC_URL ? new URL(e.PUBLIC_URL).origin : undefined,
      /** Previews are served from this origin only, and the API is not served there. */
      previewOrigin: e.PREVIEW_ORIGIN ? new URL(e.PREVIEW_ORIGIN).origin : undefined,
    },
  };
}

/** Settings that are tolerable on a developer's machine and dangerous on the internet. */
function unsafeInProduction(e: z.infer<typeof environment>): string[] {
  const problems: string[] = [];
  // Credentialed CORS with a wildcard would let any site act with a user's cookies or token.
  if (e.CORS_ORIGINS.some((origin) => origin.includes('*'))) {
    problems.push('CORS_ORIGINS must list exact origins (https://app.example.com): "*" is refused because credentials are allowed');
  }
  if (e.PERSISTED_OPERATIONS_ONLY === 'true' && !e.PERSISTED_OPERATIONS_MANIFEST) {
    problems.push('PERSISTED_OPERATIONS_ONLY=true needs PERSISTED_OPERATIONS_MANIFEST (the JSON file of allowed operations)');
  }
  if (e.NODE_ENV !== 'production') return problems;
  if (e.BUILD_SANDBOX === 'none' && e.ALLOW_UNSANDBOXED_BUILDS !== 'true') {
    problems.push('NODE_ENV=production refuses BUILD_SANDBOX=none: builds run code a model wrote (set ALLOW_UNSANDBOXED_BUILDS=true only if something else isolates them)');
  }
  if (e.AUTH_PROVIDER === 'local' && !e.AUTH_JWT_SECRET) {
    problems.push('NODE_ENV=production with AUTH_PROVIDER=local needs AUTH_JWT_SECRET (32+ random characters, e.g. `openssl rand -base64 48`)');
  }
  if (!e.KILN_ENCRYPTION_KEY) {
    problems.push('NODE_ENV=production needs KILN_ENCRYPTION_KEY (32 random bytes: `openssl rand -base64 32`) to keep project secrets');
  }
  // Metrics name operations and volumes: not for the whole internet.
  if (!e.METRICS_TOKEN) problems.push('NODE_ENV=production needs METRICS_TOKEN (e.g. `openssl rand -base64 32`): /metrics answers only `Authorization: Bearer <token>`');
  else if (weakSecret(e.METRICS_TOKEN)) {
    problems.push('METRICS_TOKEN is too weak for NODE_ENV=production: use at least 32 random characters (e.g. `openssl rand -base64 32`), not a word or a repeated pattern');
  }
  return problems;
}

/** A browser's Origin header is scheme://host[:port], nothing more: an entry of any other form would never match. */
function corsOriginProblems(e: z.infer<typeof environment>): string[] {
  const problems: string[] = [];
  for (const entry of e.CORS_ORIGINS.filter((origin) => !origin.includes('*'))) {
    const origin = URL.canParse(entry) ? new URL(entry).origin : undefined;
    if (origin === entry && origin !== 'null') continue;
    problems.push(
      origin === undefined || origin === 'null'
        ? `CORS_ORIGINS entry "${entry}" is not an origin: write scheme, host and port only, as in https://app.example.com`
        : `CORS_ORIGINS entry "${entry}" is not an origin: write ${origin} (scheme, host and port only, no path or trailing slash)`,
    );
  }
  return problems;
}

/**
 * The LLM endpoints: an absolute http(s) URL, or the first generation would fail. Plain http
 * to another host stays the operator's choice (a model server beside Kiln in a private network).
 */
function providerUrlProblems(e: z.infer<typeof environment>): string[] {
  const problems: string[] = [];
  for (const name of ['GEMINI_BASE_URL', 'OPENAI_BASE_URL'] as const) {
    const value = e[name];
    if (value === undefined) continue;
    const url = URL.canParse(value) ? new URL(value) : undefined;
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || !url.hostname) {
      problems.push(`${name} must be an absolute http(s) URL (e.g. https://gateway.example.com/v1)`);
    }
  }
  return problems;
}

/** Whether `value` is an absolute URL of one of `protocols` that names a host. */
function isUrlOf(value: string, protocols: string[]): boolean {
  const url = URL.canParse(value) ? new URL(value) : undefined;
  return !!url && protocols.includes(url.protocol) && !!url.hostname;
}

/**
 * DATABASE_URL and LISTEN_DATABASE_URL, read as postgres.js reads them (only the first host of
 * a `host1,host2` list goes through URL). A password with an unencoded `#`, `%` or `@` would
 * otherwise fail at the first connection with the whole URL, password included, in the error;
 * so no problem here quotes the URL.
 */
function databaseUrlProblems(e: z.infer<typeof environment>): string[] {
  const problems: string[] = [];
  const encode = 'percent-encode reserved characters in the user name and password (# as %23, % as %25, @ as %40, / as %2F, ? as %3F, : as %3A)';
  for (const name of ['DATABASE_URL', 'LISTEN_DATABASE_URL'] as const) {
    const value = e[name];
    if (value === undefined) continue;
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1]?.toLowerCase();
    if (scheme !== 'postgres' && scheme !== 'postgresql') {
      problems.push(`${name} must be a PostgreSQL URL: postgres://user:password@host:port/database${scheme ? ` (not ${scheme}://)` : ''}`);
      continue;
    }
    const url = parseDatabaseUrl(value);
    if (!url) problems.push(`${name} is not a valid URL (postgres://user:password@host:port/database): ${encode}`);
    // A fragment means nothing to a database: a `#` (or an `@` in the path, past a `/`) is a password cut short.
    else if (url.hash || (!url.username && url.pathname.includes('@'))) problems.push(`${name} is cut short by a character of its password: ${encode}`);
    else if (!decodes(url.username) || !decodes(url.password)) problems.push(`${name} has a % that starts no percent-escape in its user name or password: ${encode}`);
  }
  return problems;
}

/** What comes between `://` and the path or query: user, password and hosts, as postgres.js cuts it. */
function authorityOf(url: string): string {
  return url.slice(url.indexOf('://') + 3).split(/[?/]/)[0]!;
}

/** `url` as postgres.js parses it, or undefined where it would throw. */
function parseDatabaseUrl(url: string): URL | undefined {
  const authority = authorityOf(url);
  const host = authority.slice(authority.indexOf('@') + 1);
  if (!decodes(host)) return undefined;
  const first = url.replace(host, host.split(',')[0]!);
  return URL.canParse(first) ? new URL(first) : undefined;
}

function decodes(text: string): boolean {
  try {
    decodeURIComponent(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Where a (valid) DATABASE_URL points, for messages: `host:port`, each host of a list; never the
 * user or password. Past the last `@`, as URL reads it: a password may hold an unencoded one.
 */
export function databaseAddress(url: string): string {
  const authority = authorityOf(url);
  return authority
    .slice(authority.lastIndexOf('@') + 1)
    .split(',')
    .map((host) => (/:\d+$/.test(host) ? host : `${host || 'localhost'}:5432`))
    .join(',');
}

function outputProblems(e: z.infer<typeof environment>): string[] {
  const problems: string[] = [];
  if (e.ARTIFACT_STORE === 'supabase' && (!e.SUPABASE_URL || !e.SUPABASE_SERVICE_ROLE_KEY)) {
    problems.push('ARTIFACT_STORE=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY');
  }
  for (const name of ['PUBLIC_URL', 'PREVIEW_ORIGIN'] as const) {
    const value = e[name];
    if (value !== undefined && !/^https?:\/\/[^/]/.test(value)) problems.push(`${name} must be an absolute http(s) URL`);
    else if (value !== undefined && !URL.canParse(value)) problems.push(`${name} is not a valid URL`);
    // Previews, archives and the redirects and <base> of a preview are served from the root.
    else if (value !== undefined && !/^\/?$/.test(new URL(value).pathname + new URL(value).search)) {
      problems.push(`${name} must be an origin without a path (write ${new URL(value).origin}): Kiln serves previews and archives at the root of its host`);
    }
  }
  // The preview origin answers previews only: the API there would answer 404 to everything.
  if (problems.length === 0 && e.PUBLIC_URL && e.PREVIEW_ORIGIN && new URL(e.PUBLIC_URL).origin === new URL(e.PREVIEW_ORIGIN).origin) {
    problems.push("PREVIEW_ORIGIN must be an origin of its own, not PUBLIC_URL's: on it Kiln serves previews and nothing of the API");
  }
  return problems;
}

/** Short, few distinct characters, or one piece repeated (`abcabcabc…`). */
export function weakSecret(secret: string): boolean {
  if (secret.length < 32) return true;
  if (new Set(secret).size < 10) return true;
  for (let period = 1; period <= secret.length / 2; period++) {
    if (secret.length % period === 0 && secret.slice(0, period).repeat(secret.length / period) === secret) return true;
  }
  // Shannon entropy of the characters: random base64 or hex of 32+ characters has well over 96 bits.
  const counts = new Map<string, number>();
  for (const char of secret) counts.set(char, (counts.get(char) ?? 0) + 1);
  const bitsPerChar = [...counts.values()].reduce((bits, n) => bits - (n / secret.length) * Math.log2(n / secret.length), 0);
  return bitsPerChar * secret.length < 96;
}

export type Config = ReturnType<typeof parseConfig>;

/** 32 bytes as 64 hex characters, or base64 in either alphabet (standard or URL-safe), padded or not. */
function decodeKey(text: string): Buffer | null {
  if (/^[0-9a-f]{64}$/i.test(text)) return Buffer.from(text, 'hex');
  if (!/^([A-Za-z0-9+/]{43}|[A-Za-z0-9_-]{43})=?$/.test(text)) return null;
  const key = Buffer.from(text, 'base64');
  // Canonical only, as before: the unused low bits of the last character are zero.
  return key.length === 32 && key.toString('base64url') === text.replace(/=$/, '').replace(/\+/g, '-').replace(/\//g, '_') ? key : null;
}

/**
 * What Kiln as a process (runMain), which opens its database itself, refuses beyond
 * parseConfig. ROLE=api or ROLE=worker over the embedded database: PGlite is opened by one
 * process only, so an API's generations would stay QUEUED (no worker could join it) and a
 * worker would wait on a database no API ever queues into. And either with EVENTS=memory:
 * a run's tokens, log lines and status would never leave its worker's process. Not in
 * parseConfig nor startKiln: an embedded database and a memory bus handed to startKiln (the
 * suites share one in-memory PGlite between an API instance and a worker) can have both
 * halves in the same process.
 *
 * QUEUE=memory is not refused: the table is the queue (docs/decisions/003), and a worker's
 * scan finds what any API queued, only a few seconds later than pg-boss would hand it over.
 */
export function ownDatabaseProblems(config: Pick<Config, 'role' | 'database' | 'events'>): string[] {
  if (config.role === 'all') return [];
  const problems: string[] = [];
  if (config.role === 'api' && !config.database.url) {
    problems.push('ROLE=api needs DATABASE_URL (a PostgreSQL its workers share): the embedded database opens in one process only, so no worker could run its generations; use ROLE=all for one process');
  }
  if (config.role === 'worker' && !config.database.url) {
    problems.push("ROLE=worker needs DATABASE_URL (the PostgreSQL of the API instances): the embedded database opens in one process only, so this worker would never see the API's generations; use ROLE=all for one process");
  }
  if (config.events.kind === 'memory') {
    problems.push(
      config.role === 'api'
        ? "ROLE=api needs EVENTS=postgres or EVENTS=redis: with EVENTS=memory no token, log line or status of the workers' runs reaches this process's subscribers"
        : "ROLE=worker needs EVENTS=postgres or EVENTS=redis: with EVENTS=memory no token, log line or status of its runs reaches the API processes' subscribers",
    );
  }
  return problems;
}

/** HOST values that listen on every address, and name none a client could use. */
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]']);

/** What start-up warns an operator of: settings that work, but not as they would want. */
export function configWarnings(config: Pick<Config, 'env' | 'http' | 'outputs'>): string[] {
  const warnings: string[] = [];
  if (!config.outputs.publicUrl && WILDCARD_HOSTS.has(config.http.host)) {
    // The address it listens on is no address a browser can open.
    const links = config.outputs.previewOrigin ? 'archive URLs' : 'preview and archive URLs';
    const host = config.http.host.includes(':') && !config.http.host.startsWith('[') ? `[${config.http.host}]` : config.http.host;
    warnings.push(`${links} would point at http://${host}, which no browser can open: set PUBLIC_URL to the address clients reach Kiln at`);
  }
  if (config.env === 'production' && !config.outputs.previewOrigin) {
    // The sandbox CSP keeps tokens safe either way; a preview on the API's own host can still pass for Kiln.
    warnings.push("previews are served from the API's own origin: set PREVIEW_ORIGIN to an origin of their own");
  }
  return warnings;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

/** For the entry points (`npm start`, `npm run db:migrate`): every problem on stderr, then exit 1. */
export function loadConfigOrExit(env: Record<string, string | undefined> = process.env): Config {
  try {
    return parseConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
}
