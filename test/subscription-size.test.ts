import { print } from 'graphql';
import { beforeAll, describe, expect, it } from 'vitest';
import { GenerationChunksDocument, GenerationUpdatedDocument, ViewerDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { signUp, type TestUser } from './support/fixtures.js';
import { startInNewProject, within } from './support/generation-helpers.js';
import { RawSocket, type RawMessage, type SseEvent, isContiguousFromZero, parseEvents, sseSubscribe } from './support/live.js';
import { useGenerationServer } from './support/suite-server.js';

// A subscription's document, variables and extensions stay in memory as long as it runs
// (graphql-ws keeps its whole subscribe message), so together they may take 16 KiB at
// most, on every transport; the contract's subscriptions take a few hundred bytes. Over
// graphql-ws its id and the message around the payload are held to that as well.
// Queries and mutations, which let go of their request once answered, are not held to it.

const LIMIT = 16 * 1024;
const PADDING = 'x'.repeat(20_000);
const refusal = {
  message: expect.stringMatching(/^A subscription's document, variables and extensions take at most 16 KiB together, since they are kept as long as it runs; this one takes 2\d KiB\.$/),
  extensions: { code: 'SUBSCRIPTION_TOO_LARGE', limit: LIMIT },
};

describe(`subscriptions held to 16 KiB of document, variables and extensions (${databaseKind})`, () => {
  // Three slots: a socket and one subscription on it, with room for the last test's socket while
  // the server lets it go; and three refused SSE streams that kept theirs would leave none for the stream after them.
  const suite = useGenerationServer({ LIVE_STREAMS_PER_USER: '3' });
  const updated = print(GenerationUpdatedDocument);
  let user: TestUser;
  let generationId: string;

  beforeAll(async () => {
    user = await signUp(suite.server);
    // A mutation may carry a long prompt: 20,000 characters is the prompt's own limit.
    const prompt = 'A to-do list with due dates and reminders. '.repeat(465);
    expect(prompt.length).toBeGreaterThan(LIMIT);
    generationId = (await startInNewProject(user, prompt)).id;
  });

  /** A graphql-ws socket the user signed in on, for `use`, closed after it. */
  const onSocket = async (use: (raw: RawSocket) => Promise<void>) => {
    const raw = await RawSocket.open(suite.server.url);
    try {
      await raw.init(user.accessToken);
      await use(raw);
    } finally {
      raw.close();
    }
  };

  /** The messages of one operation, once it has ended (error or complete). */
  const outcomeOf = async (raw: RawSocket, id: string): Promise<RawMessage[]> => {
    await within(
      raw.waitFor((message) => message.id === id && (message.type === 'error' || message.type === 'complete')),
      30_000,
      () => `operation ${id} did not end`,
    );
    return raw.messages.filter((message) => message.id === id);
  };

  it('over graphql-ws, refuses one with 20 KB of unused variables, of extensions, or nested 100,000 deep, for its id only; the socket goes on', async () => {
    await onSocket(async (raw) => {
      raw.send({ type: 'subscribe', id: 'variables', payload: { query: updated, variables: { id: generationId, padding: PADDING } } });
      raw.send({ type: 'subscribe', id: 'extensions', payload: { query: updated, variables: { id: generationId }, extensions: { padding: PADDING } } });
      // Written by hand: JSON.stringify would overflow its stack on it here too.
      const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
      raw.socket.send(`{"type":"subscribe","id":"deep","payload":{"query":${JSON.stringify(updated)},"variables":{"id":"${generationId}","deep":${deep}}}}`);
      for (const id of ['variables', 'extensions']) {
        expect(await outcomeOf(raw, id)).toEqual([{ type: 'error', id, payload: [refusal] }]);
      }
      expect(await outcomeOf(raw, 'deep')).toEqual([
        { type: 'error', id: 'deep', payload: [{ ...refusal, message: expect.stringMatching(/this one takes 19\d KiB\.$/) }] },
      ]);

      // The same socket: a query with the same padding runs, and so does the subscription without it.
      raw.send({ type: 'subscribe', id: 'query', payload: { query: print(ViewerDocument), variables: { padding: PADDING } } });
      expect((await outcomeOf(raw, 'query')).map(({ type, payload }) => ({ type, payload }))).toEqual([
        { type: 'next', payload: { data: { viewer: { id: user.id, email: user.email } } } },
        { type: 'complete', payload: undefined },
      ]);
      raw.send({ type: 'subscribe', id: 'small', payload: { query: updated, variables: { id: generationId } } });
      const small = await outcomeOf(raw, 'small');
      expect(small.at(-1)!.type).toBe('complete');
      expect(small.slice(0, -1).map((message) => message.type)).toEqual(small.slice(0, -1).map(() => 'next'));
      expect(small.at(-2)).toMatchObject({ payload: { data: { generationUpdated: { id: generationId, status: 'SUCCEEDED' } } } });
    });
  });

  // Over GET, node refuses a URL of more than 16 KiB (431) before Kiln sees it.
  it.each(['variables', 'extensions'] as const)("over SSE, refuses one with 20 KB of %s as the stream's only result, and holds no LIVE_STREAMS_PER_USER slot", async (where) => {
    const body = {
      query: updated,
      variables: { id: generationId, ...(where === 'variables' && { padding: PADDING }) },
      ...(where === 'extensions' && { extensions: { padding: PADDING } }),
    };
    // More refusals than the user has slots.
    for (let i = 0; i < 3; i++) {
      const { status, events } = await ssePost(suite.server.url, user.accessToken, body);
      expect(status).toBe(200);
      expect(events).toEqual([{ event: 'next', data: expect.any(String) }, { event: 'complete', data: '' }]);
      expect(JSON.parse(events[0]!.data)).toEqual({ errors: [refusal] });
    }
    const chunks = sseSubscribe(suite.server.url, user.accessToken, GenerationChunksDocument, { id: generationId });
    expect(await within(chunks.ended, 30_000, () => 'the SSE stream did not complete')).toEqual({ completed: true, errors: undefined });
    expect(chunks.items.length).toBeGreaterThan(0);
    expect(isContiguousFromZero(chunks.items.map((item) => item.generationChunks.seq))).toBe(true);
  });

  it('runs a subscription within the limit whose unused variable is nested too deep to stringify, unshared', async () => {
    await onSocket(async (raw) => {
      const deep = `${'['.repeat(7_500)}${']'.repeat(7_500)}`;
      raw.socket.send(`{"type":"subscribe","id":"deep","payload":{"query":${JSON.stringify(print(GenerationChunksDocument))},"variables":{"id":"${generationId}","deep":${deep}}}}`);
      const messages = await outcomeOf(raw, 'deep');
      expect(messages.at(-1)!.type).toBe('complete');
      const seqs = messages.slice(0, -1).map((message) => (message.payload as { data: { generationChunks: { seq: number } } }).data.generationChunks.seq);
      expect(seqs.length).toBeGreaterThan(0);
      expect(isContiguousFromZero(seqs)).toBe(true);
    });
  });

  it('refuses an operation id over 128 characters for that operation only', async () => {
    await onSocket(async (raw) => {
      const long = 'x'.repeat(129);
      raw.send({ type: 'subscribe', id: long, payload: { query: updated, variables: { id: generationId } } });
      expect(await outcomeOf(raw, long)).toEqual([
        { type: 'error', id: long, payload: [{ message: 'An operation id takes at most 128 characters.', extensions: { code: 'BAD_REQUEST' } }] },
      ]);
      const fits = 'y'.repeat(128);
      raw.send({ type: 'subscribe', id: fits, payload: { query: updated, variables: { id: generationId } } });
      expect((await outcomeOf(raw, fits)).at(-1)).toEqual({ type: 'complete', id: fits });
    });
  });

  it.each([
    ['text', false],
    ['binary', true],
  ])('closes with 4400 a socket whose %s subscribe frame carries 20 KB beside its id, type and payload', async (_kind, binary) => {
    await onSocket(async (raw) => {
      const message = JSON.stringify({ type: 'subscribe', id: 'extra', payload: { query: updated, variables: { id: generationId } }, padding: PADDING });
      raw.socket.send(binary ? Buffer.from(message) : message, { binary });
      expect(await raw.closed).toEqual({ code: 4400, reason: 'Invalid message: a subscribe message carries only id, type and payload' });
      expect(raw.messages.filter((each) => each.id === 'extra')).toEqual([]);
    });
  });

  it('refuses over SSE a subscription whose body is padded past the limit with whitespace, which stays in memory with the request', async () => {
    const body = `{"query":${JSON.stringify(updated)},${' '.repeat(20_000)}"variables":{"id":"${generationId}"}}`;
    const { events } = await ssePost(suite.server.url, user.accessToken, body);
    expect(events).toEqual([{ event: 'next', data: expect.any(String) }, { event: 'complete', data: '' }]);
    expect(JSON.parse(events[0]!.data)).toEqual({ errors: [refusal] });
  });

  it('lets a query over HTTP carry 20 KB of unused variables and extensions', async () => {
    const response = await user.client.post({ query: print(ViewerDocument), variables: { padding: PADDING }, extensions: { padding: PADDING } });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ data: { viewer: { id: user.id, email: user.email } } });
  });
});

/** One subscription over SSE (POST), read to its end; a string `body` is sent as it is. */
async function ssePost(httpUrl: string, token: string, body: string | { query: string; variables: object; extensions?: object }) {
  const response = await fetch(`${httpUrl}/graphql`, {
    method: 'POST',
    headers: { accept: 'text/event-stream', authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const events: SseEvent[] = [];
  for await (const event of parseEvents(response.body!)) events.push(event);
  return { status: response.status, events };
}
