import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, configWarnings, databaseAddress, ownDatabaseProblems, parseConfig } from '../../src/config.js';

describe('parseConfig', () => {
  it('reads an empty DATA_DIR as unset: the default folder, not the working directory', () => {
    expect(parseConfig({ DATA_DIR: '' }).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({ DATA_DIR: '  ' }).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({}).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({ DATA_DIR: '/srv/kiln' }).dataDir).toBe('/srv/kiln');
  });

  it('reads every blank variable as unset: PORT= listens on 4000, not on a random port, and HOST= on loopback', () => {
    const blank = parseConfig({ PORT: '', HOST: ' ', LOG_LEVEL: '', TRUST_PROXY: '', ARTIFACT_STORE: '' });
    expect(blank.http).toMatchObject({ port: 4000, host: '127.0.0.1' });
    expect(blank.logLevel).toBe('info');
  });

  it('refuses a blank NODE_ENV rather than run without the production checks', () => {
    expect(() => parseConfig({ NODE_ENV: '' })).toThrow(ConfigError);
  });
});

/** The problems parseConfig reports for `env`, or [] when it accepts it. */
function problemsOf(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems;
  }
}

describe('parseConfig lists every problem at once', () => {
  it('reports the checks across variables beside a malformed one', () => {
    const problems = problemsOf({ PORT: 'abc', LLM_PROVIDER: 'gemini', GEMINI_API_KEY: 'key\nsplit', AUTH_PROVIDER: 'supabase', QUEUE: 'pgboss', EVENTS: 'bogus' });
    expect(problems).toHaveLength(6);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^PORT: /),
        expect.stringMatching(/^GEMINI_API_KEY: /),
        expect.stringMatching(/^EVENTS: /),
        // What the malformed key leaves unmet is said too: the key is still needed.
        'LLM_PROVIDER=gemini needs GEMINI_API_KEY',
        'AUTH_PROVIDER=supabase needs SUPABASE_URL and SUPABASE_ANON_KEY',
        expect.stringMatching(/^QUEUE=pgboss/),
      ]),
    );
  });
});

describe('start-up warnings', () => {
  it('warns that links would be dead when Kiln listens on every address without PUBLIC_URL', () => {
    expect(configWarnings(parseConfig({ HOST: '0.0.0.0' }))).toEqual([
      'preview and archive URLs would point at http://0.0.0.0, which no browser can open: set PUBLIC_URL to the address clients reach Kiln at',
    ]);
    expect(configWarnings(parseConfig({ HOST: '::', PREVIEW_ORIGIN: 'https://previews.example.com' }))).toEqual([
      'archive URLs would point at http://[::], which no browser can open: set PUBLIC_URL to the address clients reach Kiln at',
    ]);
    expect(configWarnings(parseConfig({ HOST: '0.0.0.0', PUBLIC_URL: 'https://kiln.example.com' }))).toEqual([]);
    expect(configWarnings(parseConfig({}))).toEqual([]);
  });
});

describe('parseConfig refuses at start-up what would fail later', () => {
  it('refuses a PORT beyond 65535 instead of crashing in listen', () => {
    expect(problemsOf({ PORT: '70000' })).toEqual([expect.stringMatching(/^PORT: /)]);
    expect(parseConfig({ PORT: '65535' }).http.port).toBe(65535);
  });

  it("refuses a timer's delay past what setTimeout takes (24.8 days), which would fire at once and stop every build step", () => {
    for (const [name, tooLong, longest] of [
      ['BUILD_STEP_TIMEOUT_SECONDS', '2147484', 2_147_483_000],
      ['LLM_RETRY_MAX_WAIT_SECONDS', '3000000', 2_147_483_000],
      ['WS_KEEPALIVE_MS', '2147483648', 2_147_483_647],
    ] as const) {
      expect(problemsOf({ [name]: tooLong }), name).toEqual([expect.stringMatching(new RegExp(`^${name}: `))]);
      expect(problemsOf({ [name]: String(longest / (name.endsWith('_SECONDS') ? 1000 : 1)) }), name).toEqual([]);
    }
    expect(parseConfig({ BUILD_STEP_TIMEOUT_SECONDS: '2147483' }).toolchain.stepTimeoutMs).toBe(2_147_483_000);
  });

  it('refuses a shutdown grace over a day: the process exits a margin after it, on a timer of its own', () => {
    expect(problemsOf({ WORKER_SHUTDOWN_GRACE_SECONDS: '86401' })).toEqual([expect.stringMatching(/^WORKER_SHUTDOWN_GRACE_SECONDS: /)]);
    expect(parseConfig({ WORKER_SHUTDOWN_GRACE_SECONDS: '86400' }).generations.shutdownGraceMs).toBe(86_400_000);
  });

  it("refuses a token or session lifetime past ten years, whose end no timestamp can hold (every signed-in request failed)", () => {
    for (const name of ['ACCESS_TOKEN_TTL_SECONDS', 'SESSION_MAX_AGE_SECONDS', 'SIGNED_URL_TTL_SECONDS']) {
      expect(problemsOf({ [name]: '1000000000000' }), name).toEqual([expect.stringMatching(new RegExp(`^${name}: `))]);
      expect(problemsOf({ [name]: '315360000' }), name).toEqual([]);
    }
  });

  it('refuses more than 10 continuations of a cut answer, each a whole model call', () => {
    expect(problemsOf({ LLM_MAX_CONTINUATIONS: '1000' })).toEqual([expect.stringMatching(/^LLM_MAX_CONTINUATIONS: /)]);
    expect(parseConfig({ LLM_MAX_CONTINUATIONS: '10' }).llm.maxContinuations).toBe(10);
  });

  it('refuses a GEMINI_API_KEY or OPENAI_API_KEY that an HTTP header cannot carry, without repeating it', () => {
    for (const name of ['GEMINI_API_KEY', 'OPENAI_API_KEY']) {
      for (const bad of ['AIza-one\nline-two', 'AIza key', 'AIza\u0007', 'AIza-ключ']) {
        const problems = problemsOf({ [name]: bad });
        expect(problems, JSON.stringify(bad)).toEqual([`${name}: An API key is printable ASCII with no spaces`]);
      }
      expect(problemsOf({ [name]: '  sk-proj_Abc.123~  ' })).toEqual([]);
    }
  });

  it('refuses an LLM base URL that is not an absolute http(s) URL', () => {
    for (const name of ['GEMINI_BASE_URL', 'OPENAI_BASE_URL']) {
      for (const bad of ['not a url', 'localhost:11434', 'ftp://gateway.example.com', '/v1']) {
        expect(problemsOf({ [name]: bad }), bad).toEqual([expect.stringContaining(name)]);
      }
      for (const good of ['https://gateway.example.com/v1', 'http://127.0.0.1:11434/v1', 'http://ollama:11434/v1', 'http://[::1]:11434/v1']) {
        expect(problemsOf({ [name]: good }), good).toEqual([]);
      }
    }
  });

  it('refuses a CORS_ORIGINS entry that is not exactly an origin, showing the origin to write', () => {
    expect(problemsOf({ CORS_ORIGINS: 'https://app.example.com/' })).toEqual([expect.stringContaining('write https://app.example.com ')]);
    expect(problemsOf({ CORS_ORIGINS: 'https://app.example.com/app' })).toEqual([expect.stringContaining('write https://app.example.com ')]);
    expect(problemsOf({ CORS_ORIGINS: 'https://App.Example.com:443' })).toEqual([expect.stringContaining('write https://app.example.com ')]);
    expect(problemsOf({ CORS_ORIGINS: 'null' })).toEqual([expect.stringContaining('CORS_ORIGINS entry "null" is not an origin')]);
    expect(problemsOf({ CORS_ORIGINS: 'app.example.com' })).toEqual([expect.stringContaining('is not an origin')]);
    expect(problemsOf({ CORS_ORIGINS: '*' })).toEqual([expect.stringContaining('"*" is refused')]);
    expect(parseConfig({ CORS_ORIGINS: 'https://app.example.com, http://localhost:5173' }).http.corsOrigins).toEqual([
      'https://app.example.com',
      'http://localhost:5173',
    ]);
  });

  it('refuses a PUBLIC_URL or PREVIEW_ORIGIN with a path, which preview links and redirects would leave out', () => {
    expect(problemsOf({ PUBLIC_URL: 'https://example.com/kiln' })).toEqual([expect.stringContaining('PUBLIC_URL must be an origin without a path (write https://example.com)')]);
    expect(problemsOf({ PREVIEW_ORIGIN: 'https://preview.example.com/p/' })).toEqual([expect.stringContaining('write https://preview.example.com)')]);
    expect(problemsOf({ PUBLIC_URL: 'https://kiln.example.com/', PREVIEW_ORIGIN: 'https://preview.example.com' })).toEqual([]);
    expect(parseConfig({ PUBLIC_URL: 'https://kiln.example.com/' }).outputs.publicUrl).toBe('https://kiln.example.com');
  });

  it("refuses a PREVIEW_ORIGIN that is PUBLIC_URL's origin, where the API would answer nothing", () => {
    expect(problemsOf({ PUBLIC_URL: 'https://kiln.example.com/', PREVIEW_ORIGIN: 'https://Kiln.example.com:443' })).toEqual([expect.stringContaining('PREVIEW_ORIGIN must be an origin of its own')]);
    expect(problemsOf({ PUBLIC_URL: 'https://kiln.example.com', PREVIEW_ORIGIN: 'https://kiln.example.com:8443' })).toEqual([]);
  });

  it('hands the build sandbox DATA_DIR and WORKSPACES_DIR to hide from every step', () => {
    expect(parseConfig({ DATA_DIR: '/usr/src/app/.kiln' }).buildSandbox.hiddenDirs).toEqual({ DATA_DIR: '/usr/src/app/.kiln', WORKSPACES_DIR: '/usr/src/app/.kiln/workspaces' });
    expect(parseConfig({ DATA_DIR: '/srv/kiln', WORKSPACES_DIR: '/var/kiln/ws' }).buildSandbox.hiddenDirs).toEqual({ DATA_DIR: '/srv/kiln', WORKSPACES_DIR: '/var/kiln/ws' });
  });

  it("runs a root server's build steps as uid 65520 unless BUILD_SANDBOX_UID names another, and refuses root's and nobody's", () => {
    expect(parseConfig({}).buildSandbox.stepUser).toEqual({ uid: 65_520, explicit: false });
    expect(parseConfig({ BUILD_SANDBOX_UID: '4242' }).buildSandbox.stepUser).toEqual({ uid: 4242, explicit: true });
    expect(() => parseConfig({ BUILD_SANDBOX_UID: '0' })).toThrow(/BUILD_SANDBOX_UID=0 is root/);
    expect(() => parseConfig({ BUILD_SANDBOX_UID: '65534' })).toThrow(/nobody's/);
    expect(() => parseConfig({ BUILD_SANDBOX_UID: 'kiln' })).toThrow(/BUILD_SANDBOX_UID/);
  });

  it('refuses a weak METRICS_TOKEN in production, as it does a weak AUTH_JWT_SECRET', () => {
    const production = {
      NODE_ENV: 'production',
      AUTH_JWT_SECRET: randomBytes(48).toString('base64'),
      KILN_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    };
    for (const weak of ['metrics', 'changeme-changeme-changeme-changeme', 'a'.repeat(40)]) {
      expect(problemsOf({ ...production, METRICS_TOKEN: weak }), weak).toEqual([expect.stringMatching(/^METRICS_TOKEN is too weak/)]);
    }
    expect(problemsOf({ ...production, METRICS_TOKEN: randomBytes(32).toString('base64') })).toEqual([]);
  });

  it('takes KILN_ENCRYPTION_KEY in base64url and unpadded base64 too', () => {
    for (let i = 0; i < 20; i++) {
      const bytes = randomBytes(32);
      for (const text of [bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('base64').replace(/=$/, ''), `${bytes.toString('base64url')}=`, bytes.toString('hex')]) {
        expect(parseConfig({ KILN_ENCRYPTION_KEY: text }).encryptionKey, text).toEqual(bytes);
      }
    }
  });
});

describe('parseConfig: the answer bounds', () => {
  it('bounds an answer at 30 minutes and sends no max_tokens by default', () => {
    const { llm } = parseConfig({});
    expect(llm.answerTimeoutMs).toBe(1_800_000);
    expect(llm.openai.maxTokens).toBeUndefined();
    expect(parseConfig({ LLM_ANSWER_TIMEOUT_SECONDS: '90', OPENAI_MAX_TOKENS: '8192' }).llm).toMatchObject({ answerTimeoutMs: 90_000, openai: { maxTokens: 8192 } });
  });

  it('refuses an answer timeout of 0, which would stop every answer at once', () => {
    expect(problemsOf({ LLM_ANSWER_TIMEOUT_SECONDS: '0' })).toEqual([expect.stringMatching(/^LLM_ANSWER_TIMEOUT_SECONDS: /)]);
  });

  it('refuses an OPENAI_MAX_TOKENS that is not a whole number of tokens, saying what it must be', () => {
    for (const bad of ['lots', '1.5', '0', '-3']) {
      expect(problemsOf({ OPENAI_MAX_TOKENS: bad })).toEqual([expect.stringMatching(/^OPENAI_MAX_TOKENS: a whole number of tokens, 1 or more/)]);
    }
  });
});

describe('ROLE=api on the embedded database', () => {
  it('is refused: no worker could ever open DATA_DIR beside it, so nothing it queues would run', () => {
    expect(ownDatabaseProblems(parseConfig({ ROLE: 'api', EVENTS: 'redis', REDIS_URL: 'redis://cache:6379' }))).toEqual([expect.stringMatching(/^ROLE=api needs DATABASE_URL/)]);
    expect(ownDatabaseProblems(parseConfig({ ROLE: 'api', DATABASE_URL: 'postgres://kiln@db.internal:5432/kiln', EVENTS: 'postgres' }))).toEqual([]);
    expect(ownDatabaseProblems(parseConfig({}))).toEqual([]);
    expect(ownDatabaseProblems(parseConfig({ ROLE: 'worker', DATABASE_URL: 'postgres://kiln@db.internal:5432/kiln', EVENTS: 'postgres' }))).toEqual([]);
  });
});

describe('ROLE=worker on the embedded database', () => {
  it("is refused: it could never open the API's DATA_DIR, so no generation would ever reach it", () => {
    const problems = ownDatabaseProblems(parseConfig({ ROLE: 'worker', EVENTS: 'redis', REDIS_URL: 'redis://cache:6379' }));
    expect(problems).toEqual([expect.stringMatching(/^ROLE=worker needs DATABASE_URL/)]);
    expect(problems[0]).toMatch(/use ROLE=all for one process$/);
  });
});

describe('ROLE=api and ROLE=worker with EVENTS=memory (the default)', () => {
  const database = { DATABASE_URL: 'postgres://kiln@db.internal:5432/kiln' };
  it("is refused: a run's events would never leave its worker's process, so an API's subscribers would see nothing live", () => {
    expect(ownDatabaseProblems(parseConfig({ ROLE: 'api', ...database }))).toEqual([expect.stringMatching(/^ROLE=api needs EVENTS=postgres or EVENTS=redis: with EVENTS=memory /)]);
    expect(ownDatabaseProblems(parseConfig({ ROLE: 'worker', ...database, EVENTS: 'memory' }))).toEqual([
      expect.stringMatching(/^ROLE=worker needs EVENTS=postgres or EVENTS=redis: with EVENTS=memory /),
    ]);
    // Said together with the embedded database's problem, not after it is fixed.
    expect(ownDatabaseProblems(parseConfig({ ROLE: 'api' }))).toEqual([expect.stringMatching(/^ROLE=api needs DATABASE_URL/), expect.stringMatching(/^ROLE=api needs EVENTS=/)]);
  });

  it('accepts QUEUE=memory: a worker finds what any API queued by its scan of the table', () => {
    for (const role of ['api', 'worker']) {
      expect(ownDatabaseProblems(parseConfig({ ROLE: role, ...database, QUEUE: 'memory', EVENTS: 'postgres' })), role).toEqual([]);
      expect(ownDatabaseProblems(parseConfig({ ROLE: role, ...database, EVENTS: 'redis', REDIS_URL: 'rediss://:pw@cache.internal:6380/2' })), role).toEqual([]);
    }
    expect(ownDatabaseProblems(parseConfig({ ROLE: 'all' }))).toEqual([]);
  });
});

describe('SUPABASE_URL and REDIS_URL', () => {
  it('refuses a SUPABASE_URL that is not an absolute http(s) URL when Supabase Auth or Storage uses it', () => {
    for (const bad of ['notaurl', 'ftp://x.example', 'YOUR-PROJECT.supabase.co', 'https://']) {
      expect(problemsOf({ AUTH_PROVIDER: 'supabase', SUPABASE_URL: bad, SUPABASE_ANON_KEY: 'anon' }), bad).toEqual([expect.stringMatching(/^SUPABASE_URL must be an absolute http\(s\) URL/)]);
      expect(problemsOf({ ARTIFACT_STORE: 'supabase', SUPABASE_URL: bad, SUPABASE_SERVICE_ROLE_KEY: 'service' }), bad).toEqual([
        expect.stringMatching(/^SUPABASE_URL must be an absolute http\(s\) URL/),
      ]);
    }
    for (const good of ['https://abc.supabase.co', 'http://127.0.0.1:54321']) {
      expect(problemsOf({ AUTH_PROVIDER: 'supabase', SUPABASE_URL: good, SUPABASE_ANON_KEY: 'anon' }), good).toEqual([]);
    }
    // Not used, not checked (a placeholder left in an .env).
    expect(problemsOf({ SUPABASE_URL: 'notaurl' })).toEqual([]);
  });

  it('refuses a REDIS_URL that is not redis:// or rediss:// when EVENTS=redis uses it, without repeating its password', () => {
    for (const bad of ['notaurl', 'cache.internal:6379', 'http://cache.internal:6379', 'redis://', 'redis://:S3cret@']) {
      const problems = problemsOf({ EVENTS: 'redis', REDIS_URL: bad });
      expect(problems, bad).toEqual([expect.stringMatching(/^REDIS_URL must be a Redis URL: redis:\/\//)]);
      expect(problems[0], bad).not.toContain('S3cret');
    }
    for (const good of ['redis://127.0.0.1:6379', 'rediss://:pw@cache.internal:6380/2', 'redis://default:pw@[::1]:6379']) {
      expect(problemsOf({ EVENTS: 'redis', REDIS_URL: good }), good).toEqual([]);
    }
    expect(problemsOf({ REDIS_URL: 'notaurl' })).toEqual([]);
  });
});

describe('DATABASE_URL and LISTEN_DATABASE_URL', () => {
  it('refuses a URL postgres.js could not read, naming the variable and never repeating the password', () => {
    const cases = [
      ['postgres://kiln:S3cret#Pass@127.0.0.1:1/kiln', /is not a valid URL/],
      ['postgres://kiln:S3cretPa%ss@127.0.0.1:1/kiln', /has a % that starts no percent-escape/],
      // Parsed by URL as host "kiln", port 1234 and a fragment: the first connection would go elsewhere.
      ['postgres://kiln:1234#S3cret@db.internal/kiln', /is cut short/],
      // Host "kiln", port 1234 and a path holding the rest of the password and the real host.
      ['postgres://kiln:1234/S3cret@db.internal/kiln', /is cut short/],
      ['mysql://kiln:S3cret@db.internal:3306/kiln', /must be a PostgreSQL URL.*\(not mysql:\/\/\)/],
      ['db.internal:5432/kiln', /must be a PostgreSQL URL/],
    ] as const;
    for (const name of ['DATABASE_URL', 'LISTEN_DATABASE_URL']) {
      for (const [url, message] of cases) {
        const problems = problemsOf({ [name]: url });
        expect(problems, url).toEqual([expect.stringMatching(new RegExp(`^${name} `))]);
        expect(problems[0], url).toMatch(message);
        expect(problems[0], url).not.toContain('S3cret');
        expect(problems[0], url).not.toContain('kiln:');
      }
    }
  });

  it('reports a problem of each URL together, and beside a setting of the wrong shape', () => {
    const problems = problemsOf({ DATABASE_URL: 'postgres://kiln:a#b@db/kiln', LISTEN_DATABASE_URL: 'mysql://db/kiln', PORT: '70000' });
    expect(problems).toEqual([expect.stringMatching(/^PORT: /), expect.stringMatching(/^DATABASE_URL /), expect.stringMatching(/^LISTEN_DATABASE_URL /)]);
  });

  it('accepts what postgres.js reads: encoded passwords, postgresql://, several hosts, no user, an @ in the query', () => {
    for (const url of [
      'postgres://kiln:S3cret%23Pass%25@127.0.0.1:5432/kiln',
      'postgresql://kiln@db.internal/kiln?sslmode=require',
      'postgres://kiln:pw@db1:5432,db2:5433/kiln?target_session_attrs=read-write',
      'postgres://:pw@db/kiln',
      'postgres://kiln@db/kiln?application_name=a@b',
      'postgres://postgres@127.0.0.1:5432/test',
    ]) {
      expect(problemsOf({ DATABASE_URL: url, LISTEN_DATABASE_URL: url }), url).toEqual([]);
    }
  });

  it('names where a URL points without its user or password', () => {
    expect(databaseAddress('postgres://kiln:S3cret@127.0.0.1:1/kiln')).toBe('127.0.0.1:1');
    expect(databaseAddress('postgresql://kiln@db.internal/kiln?sslmode=require')).toBe('db.internal:5432');
    expect(databaseAddress('postgres://kiln:pw@db1:5432,db2/kiln')).toBe('db1:5432,db2:5432');
    expect(databaseAddress('postgres://kiln:hunter@prod@127.0.0.1:1/kiln')).toBe('127.0.0.1:1');
  });
});

describe('OTEL_TRACES_EXPORTER=none', () => {
  it('turns tracing off in any case, even with an OTLP endpoint set (.env.example: "none: off")', () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' };
    for (const none of ['none', 'NONE', ' None ', 'otlp,none']) {
      expect(parseConfig({ OTEL_TRACES_EXPORTER: none }).tracing.enabled, none).toBe(false);
      expect(parseConfig({ OTEL_TRACES_EXPORTER: none, ...endpoint }).tracing.enabled, none).toBe(false);
    }
    expect(parseConfig(endpoint).tracing.enabled).toBe(true);
  });
});

describe('OTEL_TRACES_EXPORTER', () => {
  it('accepts the exporters the OpenTelemetry SDK knows, alone or as a list', () => {
    for (const names of ['otlp', 'console', 'zipkin', 'otlp,console', ' otlp , zipkin ']) {
      expect(parseConfig({ OTEL_TRACES_EXPORTER: names }).tracing.enabled, names).toBe(true);
    }
  });

  it('refuses any other name, which the SDK would skip, exporting nothing: a typo, another case, a list with one', () => {
    for (const [names, bad] of [['otpl', 'otpl'], ['OTLP', 'OTLP'], ['otlp,jaeger', 'jaeger'], ['null', 'null']] as const) {
      expect(problemsOf({ OTEL_TRACES_EXPORTER: names }), names).toEqual([
        `OTEL_TRACES_EXPORTER: "${bad}" is no exporter the OpenTelemetry SDK knows: use otlp, console, zipkin or none (in lower case; several comma-separated)`,
      ]);
    }
  });
});

describe('live-stream caps', () => {
  it('default to 200 per user and 1,000 per client address, and take only whole numbers of at least 1', () => {
    expect(parseConfig({}).subscriptions).toMatchObject({ maxLivePerUser: 200, maxLivePerAddress: 1000 });
    expect(parseConfig({ LIVE_STREAMS_PER_USER: '3', LIVE_STREAMS_PER_ADDRESS: '50000' }).subscriptions).toMatchObject({ maxLivePerUser: 3, maxLivePerAddress: 50_000 });
    for (const name of ['LIVE_STREAMS_PER_USER', 'LIVE_STREAMS_PER_ADDRESS']) {
      for (const bad of ['0', '-1', '2.5', 'many']) expect(problemsOf({ [name]: bad }), `${name}=${bad}`).toEqual([expect.stringMatching(new RegExp(`^${name}: `))]);
    }
  });
});

describe('STREAM_POLL_MS', () => {
  it('defaults to 2 s, takes a longer wait, and refuses one under 50 ms, which would read the database for every stream all the time', () => {
    expect(parseConfig({}).subscriptions.pollMs).toBe(2000);
    expect(parseConfig({ STREAM_POLL_MS: '600000' }).subscriptions.pollMs).toBe(600_000);
    for (const bad of ['0', '49', '1.5', 'soon']) expect(problemsOf({ STREAM_POLL_MS: bad }), bad).toEqual([expect.stringMatching(/^STREAM_POLL_MS: /)]);
  });
});
