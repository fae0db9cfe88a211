import path from 'node:path';
import { z } from 'zod';

// The one place that reads the environment (STYLE 12): every variable parsed once,
// every problem reported together.

const optional = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v.trim()));
const int = (fallback: number, min = 0) => z.coerce.number().int().min(min).default(fallback);
const list = optional.transform((v) => (v ? v.split(',').map((s) => s.trim()).filter(Boolean) : []));

const environment = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: int(4000),
  HOST: z.string().default('127.0.0.1'),
  DATA_DIR: z.string().default('./.kiln'),
  DATABASE_URL: optional,
  MIGRATE_ON_START: z.enum(['true', 'false']).default('true'),
  AUTH_PROVIDER: z.enum(['local', 'supabase']).default('local'),
  SUPABASE_URL: optional,
  SUPABASE_ANON_KEY: optional,
  SUPABASE_SERVICE_ROLE_KEY: optional,
  SUPABASE_JWT_SECRET: optional,
  ACCESS_TOKEN_TTL_SECONDS: int(3600, 1),
  AUTH_JWT_SECRET: optional,
  KILN_ENCRYPTION_KEY: optional,
  LLM_PROVIDER: z.enum(['offline', 'gemini', 'openai']).default('offline'),
  GEMINI_API_KEY: optional,
  GEMINI_MODEL: z.string().default('gemini-2.5-flash'),
  GEMINI_BASE_URL: optional,
  OPENAI_BASE_URL: optional,
  OPENAI_API_KEY: optional,
  OPENAI_MODEL: optional,
  OFFLINE_CHUNK_DELAY_MS: int(15),
  WORKSPACES_DIR: optional,
  WORKSPACES_KEEP_PER_PROJECT: int(20, 1),
  FLUTTER_BIN: z.string().default('flutter'),
  NPM_BIN: z.string().default('npm'),
  BUILD_STEP_TIMEOUT_SECONDS: int(600, 1),
  GENERATION_LEASE_SECONDS: int(30, 2),
  WORKER_CONCURRENCY: int(2, 1),
  MAX_ACTIVE_GENERATIONS_PER_USER: int(3, 1),
  ROLE: z.enum(['all', 'api', 'worker']).default('all'),
  QUEUE: z.enum(['memory', 'pgboss']).default('memory'),
  EVENTS: z.enum(['memory', 'postgres', 'redis']).default('memory'),
  REDIS_URL: optional,
  CORS_ORIGINS: list,
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Environment = Record<string, string | undefined>;

export function parseConfig(env: Record<string, string | undefined>) {
  const parsed = environment.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
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
  if ((e.EVENTS === 'redis') && !e.REDIS_URL) problems.push('EVENTS=redis needs REDIS_URL');
  if ((e.QUEUE === 'pgboss' || e.EVENTS === 'postgres') && !e.DATABASE_URL) {
    problems.push('QUEUE=pgboss and EVENTS=postgres need DATABASE_URL (a shared PostgreSQL)');
  }
  if (e.AUTH_JWT_SECRET !== undefined && e.AUTH_JWT_SECRET.length < 32) {
    problems.push('AUTH_JWT_SECRET must be at least 32 characters');
  }
  const encryptionKey = e.KILN_ENCRYPTION_KEY === undefined ? undefined : decodeKey(e.KILN_ENCRYPTION_KEY);
  if (encryptionKey === null) {
    problems.push('KILN_ENCRYPTION_KEY must be 32 random bytes, as 64 hex characters or base64 (e.g. `openssl rand -base64 32`)');
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const dataDir = path.resolve(e.DATA_DIR);
  return {
    env: e.NODE_ENV,
    http: { port: e.PORT, host: e.HOST, corsOrigins: e.CORS_ORIGINS },
    dataDir,
    database: { url: e.DATABASE_URL, migrateOnStart: e.MIGRATE_ON_START === 'true' },
    auth: {
      provider: e.AUTH_PROVIDER,
      accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
      jwtSecret: e.AUTH_JWT_SECRET,
      supabase: {
        url: e.SUPABASE_URL,
        anonKey: e.SUPABASE_ANON_KEY,
        serviceRoleKey: e.SUPABASE_SERVICE_ROLE_KEY,
        jwtSecret: e.SUPABASE_JWT_SECRET,
      },
    },
    /** Project secrets' key; unset means generated once under DATA_DIR (embedded) or secrets disabled. */
    encryptionKey: encryptionKey ?? undefined,
    llm: {
      provider: e.LLM_PROVIDER,
      gemini: { apiKey: e.GEMINI_API_KEY, model: e.GEMINI_MODEL, baseUrl: e.GEMINI_BASE_URL },
      openai: { baseUrl: e.OPENAI_BASE_URL, apiKey: e.OPENAI_API_KEY, model: e.OPENAI_MODEL },
      offlineChunkDelayMs: e.OFFLINE_CHUNK_DELAY_MS,
    },
    workspaces: {
      dir: path.resolve(e.WORKSPACES_DIR ?? path.join(dataDir, 'workspaces')),
      keepPerProject: e.WORKSPACES_KEEP_PER_PROJECT,
    },
    toolchain: {
      bins: { flutter: e.FLUTTER_BIN, npm: e.NPM_BIN },
      stepTimeoutMs: e.BUILD_STEP_TIMEOUT_SECONDS * 1000,
    },
    generations: {
      leaseMs: e.GENERATION_LEASE_SECONDS * 1000,
      workerConcurrency: e.WORKER_CONCURRENCY,
      maxActivePerUser: e.MAX_ACTIVE_GENERATIONS_PER_USER,
    },
    role: e.ROLE,
    queue: e.QUEUE,
    events: { kind: e.EVENTS, redisUrl: e.REDIS_URL },
    logLevel: e.LOG_LEVEL,
  };
}

export type Config = ReturnType<typeof parseConfig>;

function decodeKey(text: string): Buffer | null {
  const key = /^[0-9a-f]{64}$/i.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  return key.length === 32 && (key.toString('base64') === text || key.toString('hex') === text.toLowerCase()) ? key : null;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}
