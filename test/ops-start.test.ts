import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { repoRoot, tempDir } from './support/generation-helpers.js';
import { startProcess } from './support/process.js';

// What an operator reads when a start cannot go ahead: one line (or a list of problems), exit 1,
// never a stack trace. The processes here exit at once; none is left running.

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function dataDir(name: string): Promise<string> {
  const data = await tempDir(name);
  cleanups.push(() => data.remove());
  return data.path;
}

/** `npm run db:migrate` (tsx src/db/migrate-cli.ts) with only `env`: its exit code and stderr. */
async function migrate(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/db/migrate-cli.ts'], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr };
}

describe('Kiln as a process that cannot listen', () => {
  it('says that the port is taken, as a configuration problem, and exits 1', async () => {
    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const { port } = server.address() as AddressInfo;
    const { code, stderr } = await startProcess({ PORT: String(port), DATA_DIR: await dataDir('port-taken'), LOG_LEVEL: 'silent' });
    expect(code).toBe(1);
    expect(stderr).toBe(`Invalid configuration:\n  - Cannot listen on 127.0.0.1:${port} (EADDRINUSE): something else listens there: choose another PORT, or stop it\n`);
  });

  it('says that HOST is no address of this machine, as a configuration problem, and exits 1', async () => {
    // TEST-NET-1 (RFC 5737): no machine has it, and binding to it sends nothing anywhere.
    const { code, stderr } = await startProcess({ HOST: '192.0.2.1', DATA_DIR: await dataDir('host-elsewhere'), LOG_LEVEL: 'silent' });
    expect(code).toBe(1);
    expect(stderr).toBe('Invalid configuration:\n  - Cannot listen on 192.0.2.1:0 (EADDRNOTAVAIL): HOST is no address of this machine\n');
  });
});

describe('Kiln as a process with a URL of the wrong kind', () => {
  it('refuses a SUPABASE_URL that is not an http(s) URL in one line, before it opens anything', async () => {
    const data = await dataDir('supabase-url');
    const { code, stderr } = await startProcess({ AUTH_PROVIDER: 'supabase', SUPABASE_URL: 'YOUR-PROJECT.supabase.co', SUPABASE_ANON_KEY: 'anon', DATA_DIR: data, LOG_LEVEL: 'silent' }, 30_000);
    expect(code).toBe(1);
    expect(stderr).toBe("Invalid configuration:\n  - SUPABASE_URL must be an absolute http(s) URL: the project's URL, e.g. https://YOUR-PROJECT.supabase.co\n");
    expect(await readdir(data)).toEqual([]);
  });
});

describe('Kiln as a process with ROLE=api or ROLE=worker and EVENTS=memory', () => {
  it('refuses to start, saying why, before it connects to the database', async () => {
    for (const role of ['api', 'worker']) {
      // Nothing listens on port 1: had it gone on, the refusal would be "Cannot reach the database".
      const env = { ROLE: role, DATABASE_URL: 'postgres://kiln@127.0.0.1:1/kiln', DATA_DIR: await dataDir(`events-memory-${role}`), LOG_LEVEL: 'silent' };
      const { code, stderr } = await startProcess(env, 30_000);
      expect(code, role).toBe(1);
      expect(stderr, role).toMatch(new RegExp(`^Invalid configuration:\\n {2}- ROLE=${role} needs EVENTS=postgres or EVENTS=redis: with EVENTS=memory [^\\n]+\\n$`));
    }
  });
});

describe('npm run db:migrate against a database out of reach', () => {
  it('says what `npm start` says, in one line, and exits 1', async () => {
    const env = { DATABASE_URL: 'postgres://kiln:S3cret@127.0.0.1:1/kiln', DATA_DIR: await dataDir('migrate-unreachable'), LOG_LEVEL: 'silent' };
    const [migrated, started] = await Promise.all([migrate(env), startProcess(env, 30_000)]);
    expect(migrated).toEqual({ code: 1, stderr: 'Cannot reach the database at 127.0.0.1:1 (ECONNREFUSED)\n' });
    expect(started).toEqual(migrated);
  });
});
