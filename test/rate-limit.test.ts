import { randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { sql } from 'drizzle-orm';
import { print } from 'graphql';
import { describe, expect, it } from 'vitest';
import { createRateLimits, memoryRateLimitStore } from '../src/api/rate-limit.js';
import { rowsOf } from '../src/db/client.js';
import { postgresRateLimitStore } from '../src/db/rate-limit-store.js';
import { RateLimitedError } from '../src/errors.js';
import { ArchiveProjectDocument, RetryGenerationDocument, SignInDocument, SignUpDocument, StartGenerationDocument } from './gql/graphql.js';
import { createTestDatabase, databaseKind, testDatabaseUrl } from './support/db.js';
import { createProject, expectTypename, PASSWORD, signUp, type TestUser, uniqueEmail, WINDOW } from './support/fixtures.js';
import { startAccepted, startGeneration, startInstance, waitForEnd } from './support/generation-helpers.js';
import { refusalCounts, refusalsSince, refusedOnly } from './support/metrics.js';
import { type GraphQLClient, startTestServer, useTestServer } from './support/server.js';
import { useGenerationServer } from './support/suite-server.js';

// Rate limits answer RateLimitedError { retryAfterSeconds } once a window's budget of
// attempts is spent: sign-in and sign-up per client address and per email, session refreshes
// per client address, starting generations per user and per client address. The client address is the socket's unless TRUST_PROXY says
// which X-Forwarded-For entry to believe.

async function signInAs(client: GraphQLClient, email: string, password: string, headers: Record<string, string> = {}) {
  const response = await client.post({ query: printSignIn, variables: { email, password } }, headers);
  return ((await response.json()) as { data: { signIn: { __typename: string; retryAfterSeconds?: number; message?: string } } }).data.signIn;
}
const printSignIn = `mutation SignIn($email: String!, $password: String!) {
  signIn(input: { email: $email, password: $password }) {
    __typename
    ... on RateLimitedError { retryAfterSeconds message }
    ... on Error { message }
  }
}`;

describe(`sign-in and sign-up per email (${databaseKind})`, () => {
  const server = useTestServer({ RATE_LIMIT_AUTH_PER_EMAIL: `3/${WINDOW}` });

  it('stops guessing one account after a few attempts, even with the right password, and says when to come back', async () => {
    const refusedBefore = await refusalCounts(server.url);
    const email = uniqueEmail('victim');
    await signUp(server, email); // attempt 1 on this email
    expect((await signInAs(server.client(), email, 'wrong 1')).__typename).toBe('AuthError');
    expect((await signInAs(server.client(), email.toUpperCase(), 'wrong 2')).__typename).toBe('AuthError');
    const limited = await signInAs(server.client(), email, PASSWORD);
    expect(limited.__typename).toBe('RateLimitedError');
    expect(limited.retryAfterSeconds).toBeGreaterThan(0);
    expect(limited.retryAfterSeconds).toBeLessThanOrEqual(WINDOW);
    expect(limited.message).not.toMatch(/\d/);
    // Signing up again with that email counts too.
    const { signUp: again } = await server.client().expectNoErrors(SignUpDocument, { email, password: PASSWORD });
    expect(again.__typename).toBe('RateLimitedError');
    // Operators see what was turned away, and by which limit.
    expect(await refusalsSince(server.url, refusedBefore)).toEqual(refusedOnly({ auth_per_email: 2 }));
  });

  it('refuses an overlong email on sign-in as on sign-up, before it reaches a counter', async () => {
    const long = `${'a'.repeat(300)}@example.com`;
    for (let attempt = 0; attempt < 4; attempt++) {
      const refused = await signInAs(server.client(), long, 'x');
      expect(refused.__typename).toBe('ValidationError');
    }
  });
});

describe(`sign-in and sign-up per client address (${databaseKind})`, () => {
  const server = useTestServer({ RATE_LIMIT_AUTH_PER_IP: `4/${WINDOW}` });

  it('limits one client address across emails, and does not believe X-Forwarded-For without TRUST_PROXY', async () => {
    const refusedBefore = await refusalCounts(server.url);
    for (let i = 0; i < 4; i++) {
      const result = await signInAs(server.client(), uniqueEmail('spray'), 'guess', { 'x-forwarded-for': `203.0.113.${i}` });
      expect(result.__typename).toBe('AuthError');
    }
    const limited = await signInAs(server.client(), uniqueEmail('spray'), 'guess', { 'x-forwarded-for': '198.51.100.7' });
    expect(limited.__typename).toBe('RateLimitedError');
    const { signUp: refused } = await server.client().expectNoErrors(SignUpDocument, { email: uniqueEmail(), password: PASSWORD });
    expect(refused.__typename).toBe('RateLimitedError');
    expect(await refusalsSince(server.url, refusedBefore)).toEqual(refusedOnly({ auth_per_ip: 2 }));
  });
});

describe(`behind a trusted proxy (${databaseKind})`, () => {
  const server = useTestServer({ TRUST_PROXY: 'true', RATE_LIMIT_AUTH_PER_IP: `2/${WINDOW}` });

  it('counts per address the proxy saw (the last X-Forwarded-For entry), not per spoofable first entry', async () => {
    const from = (chain: string) => ({ 'x-forwarded-for': chain });
    expect((await signInAs(server.client(), uniqueEmail(), 'x', from('192.0.2.1'))).__typename).toBe('AuthError');
    expect((await signInAs(server.client(), uniqueEmail(), 'x', from('10.9.9.9, 192.0.2.1'))).__typename).toBe('AuthError');
    // The client wrote a different first entry; the proxy still saw 192.0.2.1.
    expect((await signInAs(server.client(), uniqueEmail(), 'x', from('1.1.1.1, 192.0.2.1'))).__typename).toBe('RateLimitedError');
    // Another client behind the same proxy has its own count.
    expect((await signInAs(server.client(), uniqueEmail(), 'x', from('192.0.2.2'))).__typename).toBe('AuthError');
  });

  it('counts an IPv6 client by its /64, from which it could take a new address for every attempt', async () => {
    const from = (address: string) => ({ 'x-forwarded-for': address });
    expect((await signInAs(server.client(), uniqueEmail(), 'x', from('2001:db8:7:1::1'))).__typename).toBe('AuthError');
    expect((await signInAs(server.client(), uniqueEmail(), 'x', from('2001:db8:7:1:ffff:1:2:3'))).__typename).toBe('AuthError');
    expect((await signInAs(server.client(), uniqueEmail(), 'x', from('2001:0DB8:0007:0001::abcd'))).__typename).toBe('RateLimitedError');
    // The next /64 is another client.
    expect((await signInAs(server.client(), uniqueEmail(), 'x', from('2001:db8:7:2::1'))).__typename).toBe('AuthError');
  });
});

describe(`refreshing sessions per client address (${databaseKind})`, () => {
  const server = useTestServer({ TRUST_PROXY: 'true', RATE_LIMIT_REFRESH_PER_IP: `2/${WINDOW}` });

  /** refreshSession's result, sent as a client behind the proxy at `address`. */
  async function refreshFrom(address: string, refreshToken: string) {
    const response = await server.client().post({ query: printRefresh, variables: { refreshToken } }, { 'x-forwarded-for': address });
    type Result = { __typename: string; refreshToken?: string; retryAfterSeconds?: number; message?: string };
    return ((await response.json()) as { data: { refreshSession: Result } }).data.refreshSession;
  }
  const printRefresh = `mutation RefreshSession($refreshToken: String!) {
    refreshSession(input: { refreshToken: $refreshToken }) {
      __typename
      ... on AuthSession { refreshToken }
      ... on RateLimitedError { retryAfterSeconds message }
      ... on Error { message }
    }
  }`;

  it('refuses a third refresh from one address before the token is spent, and leaves other addresses alone', async () => {
    const refusedBefore = await refusalCounts(server.url);
    const user = await signUp(server);
    const first = await refreshFrom('203.0.113.7', user.refreshToken);
    expect(first.__typename).toBe('AuthSession');
    // A refresh token that is no good counts too.
    expect((await refreshFrom('203.0.113.7', 'not-a-refresh-token')).__typename).toBe('AuthError');
    const limited = await refreshFrom('203.0.113.7', first.refreshToken!);
    expect(limited.__typename).toBe('RateLimitedError');
    expect(limited.retryAfterSeconds).toBeGreaterThan(0);
    expect(limited.retryAfterSeconds).toBeLessThanOrEqual(WINDOW);
    expect(limited.message).not.toMatch(/\d/);
    // Another client behind the proxy refreshes, with the token the refused attempt left unspent.
    expect((await refreshFrom('198.51.100.4', first.refreshToken!)).__typename).toBe('AuthSession');
    expect(await refusalsSince(server.url, refusedBefore)).toEqual(refusedOnly({ refresh_per_ip: 1 }));
  });
});

describe(`starting generations (${databaseKind})`, () => {
  const suite = useGenerationServer({ RATE_LIMIT_GENERATIONS_PER_USER: `2/${WINDOW}`, MAX_ACTIVE_GENERATIONS_PER_USER: '10' });

  it('refuses a user a third start (or retry) in the window and leaves other users alone', async () => {
    const refusedBefore = await refusalCounts(suite.server.url);
    const owner = await signUp(suite.server);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const first = await startAccepted(owner.client, { projectId: project.id, prompt: 'A timer' });
    await startAccepted(owner.client, { projectId: project.id, prompt: 'A stopwatch' });
    const limited = expectTypename(await startGeneration(owner.client, { projectId: project.id, prompt: 'A clock' }), 'RateLimitedError');
    expect(limited.retryAfterSeconds).toBeGreaterThan(0);
    expect(limited.retryAfterSeconds).toBeLessThanOrEqual(WINDOW);
    await waitForEnd(suite.server, owner.client, owner.accessToken, first.id);
    expectTypename((await owner.client.expectNoErrors(RetryGenerationDocument, { id: first.id })).retryGeneration, 'RateLimitedError');

    const other = await signUp(suite.server);
    const theirs = await createProject(other.client, { target: 'FLUTTER' });
    await startAccepted(other.client, { projectId: theirs.id, prompt: 'A timer' });
    expect(await refusalsSince(suite.server.url, refusedBefore)).toEqual(refusedOnly({ generations_per_user: 2 }));
  });

  it('gives back the count of a start refused for what a client may ask again about (here an archived project), not of one for a project not there', async () => {
    const owner = await signUp(suite.server);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const archived = await createProject(owner.client, { target: 'FLUTTER' });
    expectTypename((await owner.client.expectNoErrors(ArchiveProjectDocument, { id: archived.id })).archiveProject, 'Project');
    await startAccepted(owner.client, { projectId: project.id, prompt: 'A timer' });
    for (let attempt = 0; attempt < 3; attempt++) {
      expectTypename(await startGeneration(owner.client, { projectId: archived.id, prompt: 'In the archive' }), 'InvalidStateError');
    }
    expectTypename(await startGeneration(owner.client, { projectId: encodeGlobalID('Project', randomUUID()), prompt: 'Nowhere' }), 'NotFoundError');
    expectTypename(await startGeneration(owner.client, { projectId: project.id, prompt: 'A stopwatch' }), 'RateLimitedError');
  });
});

describe(`starting generations from one address (${databaseKind})`, () => {
  const suite = useGenerationServer({
    TRUST_PROXY: 'true',
    RATE_LIMIT_GENERATIONS_PER_USER: `5/${WINDOW}`,
    RATE_LIMIT_GENERATIONS_PER_IP: `2/${WINDOW}`,
    MAX_ACTIVE_GENERATIONS_PER_USER: '10',
  });

  /** startGeneration's result type, sent as a client behind the proxy at `address`. */
  async function startFrom(user: TestUser, address: string, prompt: string): Promise<string> {
    const project = await createProject(user.client, { target: 'FLUTTER' });
    const response = await user.client.post({ query: print(StartGenerationDocument), variables: { input: { projectId: project.id, prompt } } }, { 'x-forwarded-for': address });
    return ((await response.json()) as { data: { startGeneration: { __typename: string } } }).data.startGeneration.__typename;
  }

  it('refuses a third start from one address whichever account makes it (accounts are free), and leaves other addresses alone', async () => {
    const refusedBefore = await refusalCounts(suite.server.url);
    const [first, second, third] = [await signUp(suite.server), await signUp(suite.server), await signUp(suite.server)];
    expect(await startFrom(first, '203.0.113.7', 'A timer')).toBe('Generation');
    expect(await startFrom(second, '203.0.113.7', 'A stopwatch')).toBe('Generation');
    expect(await startFrom(third, '203.0.113.7', 'A clock')).toBe('RateLimitedError');
    expect(await startFrom(third, '198.51.100.4', 'A clock')).toBe('Generation');
    expect(await refusalsSince(suite.server.url, refusedBefore)).toEqual(refusedOnly({ generations_per_ip: 1 }));
  });
});

describe.skipIf(!testDatabaseUrl)('limits shared through PostgreSQL', () => {
  const server = useTestServer({ RATE_LIMIT_AUTH_PER_EMAIL: `3/${WINDOW}` });

  it('counts attempts on every instance of one database together', async () => {
    const second = await startInstance(server.database, { DATA_DIR: server.dataDir, RATE_LIMIT_AUTH_PER_EMAIL: `3/${WINDOW}` });
    try {
      const email = uniqueEmail();
      const results = [];
      for (const client of [server.client(), second.client(), server.client(), second.client()]) {
        results.push((await client.expectNoErrors(SignInDocument, { email, password: 'nope' })).signIn.__typename);
      }
      expect(results).toEqual(['AuthError', 'AuthError', 'AuthError', 'RateLimitedError']);
    } finally {
      await second.stop();
    }
  });
});

describe(`the counters (${databaseKind})`, () => {
  it('start afresh in the next window', async () => {
    let now = Date.UTC(2030, 0, 1, 12, 0, 0);
    const store = memoryRateLimitStore(() => now);
    expect((await store.hit('k', 60)).count).toBe(1);
    now += 10_000;
    expect(await store.hit('k', 60)).toEqual({ count: 2, resetInSeconds: 50 });
    expect((await store.hit('other', 60)).count).toBe(1);
    now += 50_000;
    expect(await store.hit('k', 60)).toEqual({ count: 1, resetInSeconds: 60 });
  });

  it("give back a start's count per user when the address's limit refuses it", async () => {
    const off = { authPerIp: null, authPerEmail: null, membersPerUser: null, membersPerIp: null, refreshPerIp: null };
    const limits = createRateLimits({ ...off, generationsPerUser: { limit: 2, windowSeconds: 600 }, generationsPerIp: { limit: 1, windowSeconds: 600 } }, memoryRateLimitStore());
    await limits.generationStart('user', '203.0.113.7');
    await expect(limits.generationStart('user', '203.0.113.7')).rejects.toBeInstanceOf(RateLimitedError);
    // The user's second start, from elsewhere: their count is 2, not 3.
    await limits.generationStart('user', '198.51.100.4');
    await expect(limits.generationStart('user', '192.0.2.9')).rejects.toBeInstanceOf(RateLimitedError);
  });

  it('give a hit back within its window, never below none and never into the next window', async () => {
    let now = Date.UTC(2030, 0, 1, 12, 0, 0);
    const memory = memoryRateLimitStore(() => now);
    const database = await createTestDatabase();
    try {
      // The database's windows follow its own clock: keys of their own, in windows of about ten
      // years, so that none ends during the test.
      const window = 10 * 365 * 86_400;
      for (const store of [memory, postgresRateLimitStore(database.db)]) {
        const key = `given-back:${randomUUID()}`;
        await store.hit(key, window);
        await store.hit(key, window);
        await store.unhit(key, window);
        expect((await store.hit(key, window)).count).toBe(2);
        for (let i = 0; i < 3; i++) await store.unhit(key, window);
        expect((await store.hit(key, window)).count).toBe(1);
      }
      await memory.hit('k', 60);
      now += 60_000;
      await memory.unhit('k', 60);
      expect((await memory.hit('k', 60)).count).toBe(1);
    } finally {
      await database.close();
    }
  });

  it('kept in the database outlive a sweep while their window is open, however long it is, and go once it has ended', async () => {
    const DAY = 86_400;
    // A window of about a week that opened over a day ago and stays open for an hour at least
    // (windows are aligned to multiples of their length since the epoch): the one-day sweep dropped such a counter.
    const nowSeconds = Math.floor(Date.now() / 1000);
    let week = 7 * DAY;
    while (nowSeconds % week < DAY + 3600 || week - (nowSeconds % week) < 3600) week += 3600;

    const database = await createTestDatabase();
    try {
      const store = postgresRateLimitStore(database.db);
      const off = { authPerEmail: null, generationsPerUser: null, generationsPerIp: null, membersPerUser: null, membersPerIp: null, refreshPerIp: null };
      const limits = createRateLimits({ ...off, authPerIp: { limit: 2, windowSeconds: week } }, store);
      await limits.authAttempt('203.0.113.7', 'one@example.com');
      await limits.authAttempt('203.0.113.7', 'two@example.com');
      // A minute-long counter whose window has ended (moved back one window), and one from before window lengths were kept.
      await store.hit('ended', 60);
      await database.db.execute(sql`update rate_limits set window_start = window_start - interval '60 seconds' where key like '%ended'`);
      await database.db.execute(sql`insert into rate_limits (key, window_start, hits) values ('auth:ip:198.51.100.1', now() - interval '2 days', 1)`);

      await store.sweep();

      const left = rowsOf<{ key: string }>(await database.db.execute(sql`select key from rate_limits`)).map((row) => row.key);
      expect(left.filter((key) => key.endsWith('auth:ip:203.0.113.7'))).toHaveLength(1);
      expect(left).toHaveLength(1);
      const refused = await limits.authAttempt('203.0.113.7', 'three@example.com').then(() => undefined, (error: unknown) => error);
      expect(refused).toBeInstanceOf(RateLimitedError);
      expect((refused as RateLimitedError).retryAfterSeconds).toBeGreaterThan(3600);
    } finally {
      await database.close();
    }
  });

  it('live in a table that requests can neither read nor write', async () => {
    const server = await startTestServer();
    try {
      const denied = await server.database.db
        .transaction(async (tx) => {
          await tx.execute(sql`set local role authenticated`);
          await tx.execute(sql`select count(*) from rate_limits`);
        })
        .then(
          () => 'allowed',
          (error: unknown) => String((error as { cause?: { code?: string } }).cause?.code ?? (error as { code?: string }).code),
        );
      expect(denied).toBe('42501');
      const relrowsecurity = await server.database.db.execute(sql`select relrowsecurity from pg_class where relname = 'rate_limits'`);
      expect(JSON.stringify(relrowsecurity)).toContain('true');
    } finally {
      await server.stop();
    }
  });
});
