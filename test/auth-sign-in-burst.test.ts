import { eq, inArray } from 'drizzle-orm';
import { describe, expect, it, vi } from 'vitest';
import { authSessions, users } from '../src/db/schema.js';
import { databaseKind } from './support/db.js';
import { document, PASSWORD, signIn, signUp, uniqueEmail, WINDOW } from './support/fixtures.js';
import { refusalCounts, refusalsSince, refusedOnly } from './support/metrics.js';
import { useTestServer } from './support/server.js';

// A burst of sign-ins and sign-ups with the local provider: 2 password hashes run at once, 32
// wait their turn, and the rest answer RateLimitedError at once (README, "rate-limited").
// The test holds the first scrypt runs until the whole burst has been answered or queued, so
// which attempts wait and which are refused does not depend on how fast scrypt is here.
const HASHING = 2;
const WAITING = 32;
const BUSY = 'Too many sign-ins at once; try again in a moment.';

const gate = vi.hoisted(() => ({ closed: false, held: [] as Array<() => void>, onHold: () => {} }));
vi.mock('node:crypto', async (original) => {
  const actual = await original<typeof import('node:crypto')>();
  const scrypt = (...args: Parameters<typeof actual.scrypt>) => {
    const run = () => (actual.scrypt as (...a: unknown[]) => void)(...args);
    if (!gate.closed) return run();
    gate.held.push(run);
    gate.onHold();
  };
  return { ...actual, scrypt };
});

type Outcome = { __typename: string; message?: string; retryAfterSeconds?: number; user?: { id: string; email: string } };
const SignInOutcome = document<{ signIn: Outcome }, { email: string; password: string }>(/* GraphQL */ `
  mutation SignInOutcome($email: String!, $password: String!) {
    signIn(input: { email: $email, password: $password }) {
      __typename
      ... on AuthSession { user { id email } }
      ... on RateLimitedError { retryAfterSeconds }
      ... on Error { message }
    }
  }
`);
const SignUpOutcome = document<{ signUp: Outcome }, { email: string; password: string }>(/* GraphQL */ `
  mutation SignUpOutcome($email: String!, $password: String!) {
    signUp(input: { email: $email, password: $password }) {
      __typename
      ... on AuthSession { user { id email } }
      ... on RateLimitedError { retryAfterSeconds }
      ... on Error { message }
    }
  }
`);

describe(`a burst of sign-ins with the local provider (${databaseKind})`, () => {
  // The per-address and per-email limits would otherwise answer first.
  const server = useTestServer({ RATE_LIMIT_AUTH_PER_IP: 'off', RATE_LIMIT_AUTH_PER_EMAIL: 'off' });

  it('hashes 2 at once with 32 waiting, refuses the rest at once without a session or an account, and signs in afterwards', async () => {
    const refusedBefore = await refusalCounts(server.url);
    const owner = await signUp(server);
    const { db } = server.database;
    const sessions = () =>
      db.$count(authSessions, inArray(authSessions.userId, db.select({ id: users.id }).from(users).where(eq(users.email, owner.email))));
    const sessionsBefore = await sessions();

    type Attempt = { kind: 'signIn' | 'signUp'; email: string; password: string; expected: 'AuthSession' | 'AuthError' };
    const times = (n: number, attempt: () => Attempt) => Array.from({ length: n }, attempt);
    const attempts: Attempt[] = [
      ...times(8, () => ({ kind: 'signIn', email: owner.email, password: PASSWORD, expected: 'AuthSession' })),
      ...times(4, () => ({ kind: 'signIn', email: owner.email, password: 'not the password', expected: 'AuthError' })),
      // Unknown emails hash UNKNOWN_USER_HASH, through the same limiter.
      ...times(14, () => ({ kind: 'signIn', email: uniqueEmail('nobody'), password: PASSWORD, expected: 'AuthError' })),
      ...times(12, () => ({ kind: 'signUp', email: uniqueEmail('burst'), password: PASSWORD, expected: 'AuthSession' })),
    ];
    const refusals = attempts.length - HASHING - WAITING;
    expect(refusals).toBe(4);

    // Held scrypt runs keep their slots, so only refusals can answer until the gate opens; without
    // a limiter every attempt reaches scrypt, and one held beyond HASHING opens the gate as well.
    let answered = 0;
    let burstInPlace!: () => void;
    const inPlace = new Promise<void>((resolve) => (burstInPlace = resolve));
    gate.onHold = () => gate.held.length > HASHING && burstInPlace();
    gate.closed = true;
    const results = attempts.map(async ({ kind, email, password }) => {
      const client = server.client();
      const outcome =
        kind === 'signIn'
          ? (await client.expectNoErrors(SignInOutcome, { email, password })).signIn
          : (await client.expectNoErrors(SignUpOutcome, { email, password })).signUp;
      if (++answered >= refusals) burstInPlace();
      return outcome;
    });
    let heldAtOpening = 0;
    try {
      // A request that fails outright opens the gate too, and fails the test below.
      await Promise.race([inPlace, Promise.all(results)]);
    } finally {
      heldAtOpening = gate.held.length;
      gate.closed = false;
      for (const run of gate.held.splice(0)) run();
    }
    const outcomes = await Promise.all(results);

    expect(heldAtOpening).toBeLessThanOrEqual(HASHING);
    const refused = outcomes.filter((o) => o.__typename === 'RateLimitedError');
    expect(refused).toHaveLength(refusals);
    for (const outcome of refused) expect(outcome).toEqual({ __typename: 'RateLimitedError', message: BUSY, retryAfterSeconds: 1 });
    // Operators see them turned away, and why.
    expect(await refusalsSince(server.url, refusedBefore)).toEqual(refusedOnly({ sign_in_hashing: refusals }));
    // Every other attempt got what it would have got alone.
    attempts.forEach((attempt, i) => {
      if (outcomes[i]!.__typename !== 'RateLimitedError') expect(outcomes[i], JSON.stringify(attempt)).toMatchObject({ __typename: attempt.expected });
    });

    // A refused attempt changed nothing: no session for a refused sign-in, no account for a refused sign-up.
    const outcomeOf = (kind: Attempt['kind'], typename: string) => attempts.filter((a, i) => a.kind === kind && outcomes[i]!.__typename === typename);
    expect(await sessions()).toBe(sessionsBefore + outcomeOf('signIn', 'AuthSession').length);
    const signUps = attempts.filter((a) => a.kind === 'signUp').map((a) => a.email);
    const accounts = await db.select({ email: users.email }).from(users).where(inArray(users.email, signUps));
    expect(accounts.map((a) => a.email).sort()).toEqual(outcomeOf('signUp', 'AuthSession').map((a) => a.email).sort());

    // Once the burst is over, a normal sign-in works, and a refused sign-up can be tried again.
    await expect(signIn(server, owner.email)).resolves.toMatchObject({ id: owner.id });
    const retried = outcomeOf('signUp', 'RateLimitedError')[0]?.email ?? uniqueEmail('after');
    await expect(signUp(server, retried)).resolves.toMatchObject({ email: retried });
  });
});

describe(`a sign-in turned away while hashing is busy (${databaseKind})`, () => {
  // Two sign-ins of one email from one address left in the window: a refused one must not use them up.
  const server = useTestServer({ RATE_LIMIT_AUTH_PER_IP: 'off', RATE_LIMIT_AUTH_PER_EMAIL: `3/${WINDOW}` });

  it('does not count against the sign-in limits: retried as told, the email is not locked out', async () => {
    const owner = await signUp(server); // the email's first attempt of three
    // Fill the limiter: 2 hashing (held) and 32 waiting, known to be full once the 4 beyond are refused.
    const filler = HASHING + WAITING + 4;
    let refusedFillers = 0;
    let full!: () => void;
    const isFull = new Promise<void>((resolve) => (full = resolve));
    gate.onHold = () => {};
    gate.closed = true;
    const fillers = Array.from({ length: filler }, async () => {
      const { signIn } = await server.client().expectNoErrors(SignInOutcome, { email: uniqueEmail('nobody'), password: PASSWORD });
      if (signIn.__typename === 'RateLimitedError' && ++refusedFillers === 4) full();
      return signIn;
    });
    const tries: Outcome[] = [];
    try {
      await Promise.race([isFull, Promise.all(fillers)]);
      // More tries than the email has left (2): each is turned away for the busy hashing, never for the limit.
      for (let i = 0; i < 4; i++) tries.push((await server.client().expectNoErrors(SignInOutcome, { email: owner.email, password: PASSWORD })).signIn);
    } finally {
      gate.closed = false;
      for (const run of gate.held.splice(0)) run();
    }
    await Promise.all(fillers);
    expect(tries).toEqual(Array.from({ length: 4 }, () => ({ __typename: 'RateLimitedError', message: BUSY, retryAfterSeconds: 1 })));
    // Once the burst is over, the email's two attempts left are still there.
    await expect(signIn(server, owner.email)).resolves.toMatchObject({ id: owner.id });
    await expect(signIn(server, owner.email)).resolves.toMatchObject({ id: owner.id });
    const limited = (await server.client().expectNoErrors(SignInOutcome, { email: owner.email, password: PASSWORD })).signIn;
    expect(limited).toMatchObject({ __typename: 'RateLimitedError', message: 'Too many sign-in attempts; wait a while and try again.' });
  });
});
