import { print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AddProjectMemberDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, PASSWORD, signUp, uniqueEmail, WINDOW } from './support/fixtures.js';
import { refusalCounts, refusalsSince, refusedOnly } from './support/metrics.js';
import { startTestServer, type TestServer } from './support/server.js';

// Limits that stop abuse without handing attackers a weapon: hammering a victim's email
// from one address cannot lock the victim out from their own, and addProjectMember
// cannot be used to test thousands of emails for accounts.

const signInDocument = `mutation SignIn($email: String!, $password: String!) {
  signIn(input: { email: $email, password: $password }) {
    __typename
    ... on RateLimitedError { retryAfterSeconds }
    ... on Error { message }
  }
}`;

describe(`sign-in limits cannot lock a victim out (${databaseKind})`, () => {
  let server: TestServer;

  beforeAll(async () => {
    // Behind one trusted proxy: X-Forwarded-For names the client.
    server = await startTestServer({ TRUST_PROXY: 'true', RATE_LIMIT_AUTH_PER_EMAIL: `3/${WINDOW}`, RATE_LIMIT_AUTH_PER_IP: `100/${WINDOW}` });
  });

  afterAll(async () => {
    await server?.stop();
  });

  const signInFrom = async (address: string, email: string, password: string) => {
    const response = await server.client().post({ query: signInDocument, variables: { email, password } }, { 'x-forwarded-for': address });
    return ((await response.json()) as { data: { signIn: { __typename: string } } }).data.signIn.__typename;
  };

  it("an attacker's failed guesses on an email are limited, and its owner still signs in from elsewhere", async () => {
    const email = uniqueEmail('victim');
    await signUp(server, email);
    const attacker = '203.0.113.66';
    const guesses = [];
    for (let i = 0; i < 5; i++) guesses.push(await signInFrom(attacker, email, `guess ${i}`));
    expect(guesses).toEqual(['AuthError', 'AuthError', 'AuthError', 'RateLimitedError', 'RateLimitedError']);
    // The attacker is stopped even with the right password...
    expect(await signInFrom(attacker, email, PASSWORD)).toBe('RateLimitedError');
    // ...and the victim, from their own address, is not.
    expect(await signInFrom('198.51.100.20', email, PASSWORD)).toBe('AuthSession');
  });
});

describe(`addProjectMember per client address (${databaseKind})`, () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ TRUST_PROXY: 'true', RATE_LIMIT_MEMBERS_PER_USER: `100/${WINDOW}`, RATE_LIMIT_MEMBERS_PER_IP: `3/${WINDOW}` });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('stops probing from one address spread over fresh accounts, and leaves other addresses alone', async () => {
    const refusedBefore = await refusalCounts(server.url);
    const probe = async (address: string) => {
      const user = await signUp(server);
      const project = await createProject(user.client);
      const response = await server.client(user.accessToken).post(
        { query: print(AddProjectMemberDocument), variables: { input: { projectId: project.id, email: uniqueEmail('probe'), role: 'VIEWER' } } },
        { 'x-forwarded-for': address },
      );
      return ((await response.json()) as { data: { addProjectMember: { __typename: string } } }).data.addProjectMember.__typename;
    };
    const prober = '203.0.113.77';
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await probe(prober));
    expect(answers).toEqual(['NotFoundError', 'NotFoundError', 'NotFoundError', 'RateLimitedError']);
    expect(await probe('198.51.100.30')).toBe('NotFoundError');
    expect(await refusalsSince(server.url, refusedBefore)).toEqual(refusedOnly({ members_per_ip: 1 }));
  });
});

describe(`addProjectMember per user (${databaseKind})`, () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({ RATE_LIMIT_MEMBERS_PER_USER: `3/${WINDOW}` });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('answers RateLimitedError beyond the limit, whatever the emails, and leaves other users alone', async () => {
    const refusedBefore = await refusalCounts(server.url);
    const owner = await signUp(server);
    const project = await createProject(owner.client);
    const add = (client: typeof owner.client, projectId: string, email: string) =>
      client.expectNoErrors(AddProjectMemberDocument, { input: { projectId, email, role: 'VIEWER' } }).then((r) => r.addProjectMember);
    const teammate = await signUp(server);
    expect((await add(owner.client, project.id, teammate.email)).__typename).toBe('ProjectMember');
    expect((await add(owner.client, project.id, uniqueEmail('probe'))).__typename).toBe('NotFoundError');
    expect((await add(owner.client, project.id, uniqueEmail('probe'))).__typename).toBe('NotFoundError');
    const limited = await add(owner.client, project.id, uniqueEmail('probe'));
    expect(limited).toMatchObject({ __typename: 'RateLimitedError', message: expect.stringContaining('too many') });
    // An existing account gets the same answer: the limit reveals nothing.
    expect((await add(owner.client, project.id, (await signUp(server)).email)).__typename).toBe('RateLimitedError');

    const other = await signUp(server);
    const theirs = await createProject(other.client);
    expect((await add(other.client, theirs.id, teammate.email)).__typename).toBe('ProjectMember');
    expect(await refusalsSince(server.url, refusedBefore)).toEqual(refusedOnly({ members_per_user: 2 }));
  });
});
