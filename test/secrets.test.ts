import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config.js';
import { rowsOf } from '../src/db/client.js';
import { loadEncryptionKey, createSecretBox } from '../src/projects/secret-box.js';
import { AddProjectMemberDocument, ArchiveProjectDocument, GenerationDocument, ProjectDocument, SetProjectSecretDocument } from './gql/graphql.js';
import { createTestDatabase, databaseKind } from './support/db.js';
import { type FakeGemini, startFakeGemini } from './support/fake-gemini.js';
import { type ClientFactory, clientOver, createProject, document, expectTypename, type FieldErrors, signUp, type TestUser } from './support/fixtures.js';
import { rawId, replayChunks, startAccepted, tempDir, waitForEnd } from './support/generation-helpers.js';
import { type CapturedServer, startCapturedServer } from './support/log-capture.js';
import { startProcess } from './support/process.js';
import type { GraphQLClient } from './support/server.js';

// A project's own API key is write-only: stored encrypted, used for that project's
// runs, and never in a response, a log line or a build step's environment. The
// encryption key itself must be well-formed and the one the secrets were stored with.

const fakeFlutterScript = fileURLToPath(new URL('./fixtures/bin/flutter', import.meta.url));
const key = () => randomBytes(32).toString('base64');

/** The Flutter app a model would write, in the output protocol. */
const modelOutput = [
  'Here is a counter app.\n\n<file path="lib/main.dart">\n',
  "import 'package:flutter/material.dart';\n\nvoid main() => runApp(const MaterialApp(home: Text('Counter')));\n",
  '</file>\n',
];

/** setProjectSecret with the field errors of a ValidationError, and `value` optional (a client may leave it out). */
const SetSecretDocument = document<
  {
    setProjectSecret: { __typename: string; message?: string; fieldErrors?: FieldErrors; secrets?: { name: string; updatedAt: string }[] };
  },
  { input: { projectId: string; name: 'GEMINI_API_KEY' | 'OPENAI_API_KEY'; value?: string | null } }
>(/* GraphQL */ `
  mutation SetSecretWithFieldErrors($input: SetProjectSecretInput!) {
    setProjectSecret(input: $input) {
      __typename
      ... on Project { secrets { name updatedAt } }
      ... on ValidationError { fieldErrors { path message } }
      ... on Error { message }
    }
  }
`);

/** Clients that keep every response body they receive. */
function recordingClients(server: ClientFactory, bodies: string[]): ClientFactory {
  return {
    client: (token?: string): GraphQLClient => {
      const inner = server.client(token);
      return clientOver(async (body, headers) => {
        const response = await inner.post(body, headers);
        bodies.push(await response.clone().text());
        return response;
      });
    },
  };
}

describe(`project secrets (${databaseKind})`, () => {
  const projectKey = `AIzaProject-${randomBytes(12).toString('hex')}`;
  const serverKey = `AIzaServer-${randomBytes(12).toString('hex')}`;
  const encryptionKey = key();
  const jwtSecret = randomBytes(48).toString('base64');
  const dbPassword = `db-${randomBytes(9).toString('hex')}`;
  const secrets = { projectKey, serverKey, encryptionKey, jwtSecret, dbPassword };
  const saved = { ...process.env };
  const bodies: string[] = [];
  let gemini: FakeGemini;
  let tools: { path: string; remove(): Promise<void> };
  let server: CapturedServer;
  let clients: ClientFactory;
  let owner: TestUser;

  beforeAll(async () => {
    // The server process has its secrets in its environment too, as in production:
    // build steps must not inherit them.
    Object.assign(process.env, {
      GEMINI_API_KEY: serverKey,
      KILN_ENCRYPTION_KEY: encryptionKey,
      AUTH_JWT_SECRET: jwtSecret,
      DATABASE_URL: `postgres://kiln:${dbPassword}@db.internal:5432/kiln`,
    });
    gemini = await startFakeGemini();
    gemini.script({ kind: 'stream', chunks: modelOutput });
    // A flutter that prints its whole environment into the build log first.
    tools = await tempDir('env-flutter');
    const flutter = path.join(tools.path, 'flutter');
    await writeFile(flutter, `#!/bin/sh\necho "--- environment"\nenv\necho "--- end"\nexec '${fakeFlutterScript}' "$@"\n`);
    await chmod(flutter, 0o755);
    server = await startCapturedServer({
      LLM_PROVIDER: 'gemini',
      GEMINI_API_KEY: serverKey,
      GEMINI_BASE_URL: gemini.baseUrl,
      KILN_ENCRYPTION_KEY: encryptionKey,
      AUTH_JWT_SECRET: jwtSecret,
      FLUTTER_BIN: flutter,
    });
    clients = recordingClients(server, bodies);
    owner = await signUp(clients);
  });

  afterAll(async () => {
    await server?.stop();
    await gemini?.close();
    await tools?.remove();
    for (const name of ['GEMINI_API_KEY', 'KILN_ENCRYPTION_KEY', 'AUTH_JWT_SECRET', 'DATABASE_URL']) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  });

  const expectNoSecretIn = (label: string, text: string) => {
    for (const [name, value] of Object.entries(secrets)) expect(text.includes(value), `${name} in ${label}`).toBe(false);
  };

  async function setSecret(projectId: string, value: string | null) {
    const { setProjectSecret } = await owner.client.expectNoErrors(SetProjectSecretDocument, { input: { projectId, name: 'GEMINI_API_KEY', value } });
    return expectTypename(setProjectSecret, 'Project');
  }

  it("runs a project's generations with its own key, and others with the server's", async () => {
    const withKey = await createProject(owner.client, { target: 'FLUTTER' });
    const stored = await setSecret(withKey.id, projectKey);
    expect(stored.secrets).toEqual([{ name: 'GEMINI_API_KEY', updatedAt: expect.any(String) }]);

    const first = await startAccepted(owner.client, { projectId: withKey.id, prompt: 'A counter' });
    const done = await waitForEnd(server, owner.client, owner.accessToken, first.id);
    expect(done.status, JSON.stringify(done.error)).toBe('SUCCEEDED');
    expect(gemini.requests.at(-1)?.apiKey).toBe(projectKey);

    const without = await createProject(owner.client, { target: 'FLUTTER' });
    const second = await startAccepted(owner.client, { projectId: without.id, prompt: 'A counter' });
    expect((await waitForEnd(server, owner.client, owner.accessToken, second.id)).status).toBe('SUCCEEDED');
    expect(gemini.requests.at(-1)?.apiKey).toBe(serverKey);

    // At rest it is ciphertext that does not contain the key.
    const [row] = rowsOf<{ ciphertext: string }>(await server.database.db.execute(sql`select ciphertext from project_secrets where project_id = ${rawId(withKey.id)}`));
    expect(row?.ciphertext).toMatch(/^v1\./);
    expectNoSecretIn('the stored ciphertext', row!.ciphertext);
  });

  it('never shows the key: not in any response, log line or build step environment, also when the provider refuses it', async () => {
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    await setSecret(project.id, projectKey);
    const member = await signUp(clients);
    await owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId: project.id, email: member.email, role: 'EDITOR' } });

    const ok = await startAccepted(member.client, { projectId: project.id, prompt: 'A counter' });
    await waitForEnd(server, member.client, member.accessToken, ok.id);
    const built = (await member.client.expectNoErrors(GenerationDocument, { id: ok.id })).generation!;
    expect(built.status).toBe('SUCCEEDED');
    const log = built.buildLog.map((line) => line.text);
    // The environment was printed (so the check below means something) and holds none of the server's secrets.
    expect(log).toContain('--- environment');
    expect(log.some((line) => line.startsWith('PATH='))).toBe(true);
    expect(log.some((line) => /^(GEMINI_API_KEY|KILN_ENCRYPTION_KEY|AUTH_JWT_SECRET|DATABASE_URL)=/.test(line))).toBe(false);
    expectNoSecretIn('the build log', log.join('\n'));

    // The provider refuses the key: the failure explains itself without repeating it.
    gemini.script({ kind: 'error', status: 400, message: 'API key not valid. Please pass a valid API key.' });
    const refused = await startAccepted(member.client, { projectId: project.id, prompt: 'A counter again' });
    const failed = await waitForEnd(server, member.client, member.accessToken, refused.id);
    gemini.script({ kind: 'stream', chunks: modelOutput });
    expect(failed).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR' } });
    expect(failed.error?.message).toMatch(/key/i);

    // Everything a member or owner can read about the project and its runs.
    await owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    await member.client.expectNoErrors(ProjectDocument, { id: project.id });
    await member.client.expectNoErrors(GenerationDocument, { id: refused.id });
    const replayed = await replayChunks(server.url, member.accessToken, ok.id);
    expect(replayed.length).toBeGreaterThan(0);
    expectNoSecretIn('replayed chunks', JSON.stringify(replayed));

    expect(bodies.length).toBeGreaterThan(10);
    for (const body of bodies) expectNoSecretIn('a response', body);
    // The log saw every request and run at trace level.
    expect(server.logs.lines.length).toBeGreaterThan(20);
    expectNoSecretIn('the log', server.logs.text);
  });

  it('deletes the key with null', async () => {
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    await setSecret(project.id, projectKey);
    expect((await setSecret(project.id, null)).secrets).toEqual([]);
    const run = await startAccepted(owner.client, { projectId: project.id, prompt: 'A counter' });
    await waitForEnd(server, owner.client, owner.accessToken, run.id);
    expect(gemini.requests.at(-1)?.apiKey).toBe(serverKey);
  });
});

describe(`what setProjectSecret accepts (${databaseKind})`, () => {
  let server: CapturedServer;
  let owner: TestUser;

  beforeAll(async () => {
    server = await startCapturedServer({ KILN_ENCRYPTION_KEY: key(), LOG_LEVEL: 'silent' });
    owner = await signUp(server);
  });
  afterAll(async () => {
    await server?.stop();
  });

  const set = async (input: { projectId: string; value?: string | null }) =>
    (await owner.client.expectNoErrors(SetSecretDocument, { input: { name: 'GEMINI_API_KEY', ...input } })).setProjectSecret;
  const secretsOf = async (projectId: string) => {
    const { project } = await owner.client.expectNoErrors(
      document<{ project: { secrets: { name: string; updatedAt: string }[] } | null }, { id: string }>(
        'query ProjectSecrets($id: ID!) { project(id: $id) { secrets { name updatedAt } } }',
      ),
      { id: projectId },
    );
    return project!.secrets;
  };

  it('refuses a key that an HTTP header cannot carry (a line break, a control character, a space, non-ASCII), keeping the one stored', async () => {
    const project = await createProject(owner.client);
    const stored = await set({ projectId: project.id, value: '  AIzaGood-key_1.2~  ' });
    expect(stored).toMatchObject({ __typename: 'Project', secrets: [{ name: 'GEMINI_API_KEY' }] });
    for (const bad of ['AIza-one\nline-two', 'AIza-one\r\nX-Injected: 1', 'AIza\u0007bell', 'AIza\ttab', 'AIza key', 'AIza-ключ', 'AIza\u00a0nbsp', 'AIza\u007f']) {
      const refused = await set({ projectId: project.id, value: bad });
      expect(refused, JSON.stringify(bad)).toMatchObject({
        __typename: 'ValidationError',
        fieldErrors: [{ path: ['value'], message: 'An API key is printable ASCII with no spaces' }],
      });
      expect(JSON.stringify(refused)).not.toContain(bad);
    }
    expect(await secretsOf(project.id)).toEqual(stored.secrets);
  });

  it('deletes only with an explicit null: an omitted value is a ValidationError that keeps the key', async () => {
    const project = await createProject(owner.client);
    const stored = await set({ projectId: project.id, value: 'AIzaKeep-me' });
    const omitted = await set({ projectId: project.id });
    expect(omitted).toMatchObject({ __typename: 'ValidationError', fieldErrors: [{ path: ['value'] }] });
    expect(await secretsOf(project.id)).toEqual(stored.secrets);
    expect(await set({ projectId: project.id, value: null })).toMatchObject({ __typename: 'Project', secrets: [] });
  });

  it('stores no key in an archived project (as updateProject refuses it), but still deletes one', async () => {
    const project = await createProject(owner.client);
    await set({ projectId: project.id, value: 'AIzaBefore-archive' });
    await owner.client.expectNoErrors(ArchiveProjectDocument, { id: project.id });
    const before = await secretsOf(project.id);
    expect(await set({ projectId: project.id, value: 'AIzaAfter-archive' })).toMatchObject({
      __typename: 'InvalidStateError',
      message: 'An archived project cannot be changed.',
    });
    expect(await secretsOf(project.id)).toEqual(before);
    expect(await set({ projectId: project.id, value: null })).toMatchObject({ __typename: 'Project', secrets: [] });
  });
});

describe('the secret box', () => {
  it('opens only with the whole 16-byte tag: a truncated tag fails like a wrong one', () => {
    const box = createSecretBox(randomBytes(32));
    const sealed = box.seal('AIzaSecret', 'project/GEMINI_API_KEY');
    expect(box.open(sealed, 'project/GEMINI_API_KEY')).toBe('AIzaSecret');
    const [version, iv, tag, body] = sealed.split('.');
    expect(Buffer.from(tag!, 'base64url')).toHaveLength(16);
    for (const length of [4, 8, 12, 15]) {
      const truncated = [version, iv, Buffer.from(tag!, 'base64url').subarray(0, length).toString('base64url'), body].join('.');
      expect(() => box.open(truncated, 'project/GEMINI_API_KEY'), `${length}-byte tag`).toThrow('Unsupported state or unable to authenticate data');
    }
  });
});

describe('the embedded encryption key file', () => {
  it('is generated once, whole and private, even when several starts race for it', async () => {
    const dir = await tempDir('key-file');
    try {
      const dataDir = path.join(dir.path, 'data');
      const keys = await Promise.all(Array.from({ length: 8 }, () => loadEncryptionKey({ dataDir, embedded: true })));
      const file = path.join(dataDir, 'encryption.key');
      const onDisk = Buffer.from(await readFile(file, 'utf8'), 'base64');
      expect(onDisk).toHaveLength(32);
      for (const loaded of keys) expect(loaded!.equals(onDisk)).toBe(true);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect(await readdir(dataDir)).toEqual(['encryption.key']);
      // A later start reads the same key.
      expect((await loadEncryptionKey({ dataDir, embedded: true }))!.equals(onDisk)).toBe(true);
    } finally {
      await dir.remove();
    }
  });

  it('that does not hold 32 bytes (e.g. left empty by a crash) stops start-up with a message naming it', async () => {
    const dir = await tempDir('key-file');
    try {
      const file = path.join(dir.path, 'encryption.key');
      for (const content of ['', randomBytes(16).toString('base64')]) {
        await writeFile(file, content, { mode: 0o600 });
        await expect(loadEncryptionKey({ dataDir: dir.path, embedded: true })).rejects.toThrow(ConfigError);
        await expect(loadEncryptionKey({ dataDir: dir.path, embedded: true })).rejects.toThrow(file);
        expect(await readFile(file, 'utf8'), 'the file is left as it was').toBe(content);
      }
      const dataDir = path.join(dir.path, 'started');
      await mkdir(dataDir);
      await writeFile(path.join(dataDir, 'encryption.key'), '');
      const { code, stderr } = await startProcess({ DATA_DIR: dataDir, LOG_LEVEL: 'silent' });
      expect(code).toBe(1);
      expect(stderr).toContain(path.join(dataDir, 'encryption.key'));
      expect(stderr).not.toMatch(/\n\s+at /);
    } finally {
      await dir.remove();
    }
  });
});

describe(`the encryption key (${databaseKind})`, () => {
  it('must be 32 bytes as base64 or hex; anything else stops start-up with a clear message', async () => {
    for (const bad of ['abc', randomBytes(16).toString('base64'), randomBytes(31).toString('hex'), `${randomBytes(32).toString('hex')}zz`, 'not base64 at all!!']) {
      let error: unknown;
      try {
        parseConfig({ KILN_ENCRYPTION_KEY: bad });
      } catch (e) {
        error = e;
      }
      expect(error, bad).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).problems).toEqual([expect.stringMatching(/KILN_ENCRYPTION_KEY must be 32 random bytes/)]);
      expect((error as ConfigError).message).not.toContain(bad);
    }
    expect(() => parseConfig({ KILN_ENCRYPTION_KEY: randomBytes(32).toString('hex') })).not.toThrow();

    const { code, stderr } = await startProcess({ KILN_ENCRYPTION_KEY: 'too-short' });
    expect(code).toBe(1);
    expect(stderr).toMatch(/KILN_ENCRYPTION_KEY must be 32 random bytes/);
    expect(stderr).not.toMatch(/\n\s+at /);
  });

  it('must be the key the stored secrets were encrypted with: another one stops start-up', async () => {
    const database = await createTestDatabase();
    try {
      const original = key();
      const first = await startCapturedServer({ KILN_ENCRYPTION_KEY: original, LOG_LEVEL: 'silent' }, database);
      try {
        const user = await signUp(first);
        const project = await createProject(user.client);
        const { setProjectSecret } = await user.client.expectNoErrors(SetProjectSecretDocument, {
          input: { projectId: project.id, name: 'OPENAI_API_KEY', value: 'sk-something' },
        });
        expectTypename(setProjectSecret, 'Project');
      } finally {
        await first.stop();
      }

      const refused = await startCapturedServer({ KILN_ENCRYPTION_KEY: key(), LOG_LEVEL: 'silent' }, database).then(
        async (server) => {
          await server.stop();
          return undefined;
        },
        (error: unknown) => error,
      );
      expect(refused).toBeInstanceOf(ConfigError);
      expect((refused as ConfigError).message).toMatch(/KILN_ENCRYPTION_KEY does not decrypt the project secrets/);

      const again = await startCapturedServer({ KILN_ENCRYPTION_KEY: original, LOG_LEVEL: 'silent' }, database);
      await again.stop();
    } finally {
      await database.close();
    }
  });
});
