import { GraphQLInt, GraphQLObjectType, GraphQLSchema, GraphQLString } from 'graphql';
import { createYoga } from 'graphql-yoga';
import { describe, expect, it } from 'vitest';
import { useRequestIdErrors } from '../../src/api/errors-plugin.js';
import { useSharedSubscriptionExecution } from '../../src/api/shared-execution.js';
import { useStreamErrors } from '../../src/api/stream-errors.js';
import { NotFoundError } from '../../src/errors.js';
import { SlowConsumerError } from '../../src/generations/streams.js';
import { OperationLog, createLogger } from '../../src/observability/logger.js';
import { LogCapture } from '../support/log-capture.js';

// A live stream's results go through one mapping step (shared-execution.ts), which also
// masks what went wrong unexpectedly: a field that throws while an event is executed, and
// a stream that fails. The client sees "Unexpected error." with the request id, never the
// cause; the log has the cause under that id. Expected failures keep their own code.

const SECRET = 'relation "kiln.secret_table" does not exist';

/** ticks: one event per number; `fail` throws at the event numbered -1; the stream then ends as `end` says. */
function schemaWith(end: () => Error | undefined) {
  const Tick = new GraphQLObjectType({
    name: 'Tick',
    fields: {
      n: { type: GraphQLInt },
      fail: {
        type: GraphQLString,
        resolve: ({ n }: { n: number }) => {
          if (n === -1) throw new Error(SECRET);
          return 'fine';
        },
      },
    },
  });
  return new GraphQLSchema({
    query: new GraphQLObjectType({ name: 'Query', fields: { ok: { type: GraphQLString, resolve: () => 'ok' } } }),
    subscription: new GraphQLObjectType({
      name: 'Subscription',
      fields: {
        ticks: {
          type: Tick,
          subscribe: async function* () {
            yield { ticks: { n: 1 } };
            yield { ticks: { n: -1 } };
            const error = end();
            if (error) throw error;
          },
        },
      },
    }),
  });
}

async function subscribe(end: () => Error | undefined) {
  const logs = new LogCapture();
  const logger = createLogger('trace', logs);
  const yoga = createYoga({
    schema: schemaWith(end),
    logging: false,
    maskedErrors: { isDev: false },
    plugins: [useStreamErrors(), useRequestIdErrors(), useSharedSubscriptionExecution()],
    context: () => ({ requestId: 'request-1', log: new OperationLog(logger, { requestId: 'request-1' }) }),
  });
  const response = await yoga.fetch('http://kiln.test/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ query: 'subscription { ticks { n fail } }' }),
  });
  const body = await response.text();
  const events = body
    .split('\n\n')
    .filter((frame) => frame.startsWith('event: next'))
    .map((frame) => JSON.parse(frame.slice(frame.indexOf('data: ') + 6)) as { data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] });
  return { body, events, logs };
}

describe('subscription results', () => {
  it('masks a field that throws while an event is executed, and a stream that fails, with the request id; the log has the causes', async () => {
    const { body, events, logs } = await subscribe(() => new Error(SECRET));
    expect(events[0]).toEqual({ data: { ticks: { n: 1, fail: 'fine' } } });
    // The event whose field threw: its data, and the masked error on that field.
    expect(events[1]).toEqual({
      data: { ticks: { n: -1, fail: null } },
      errors: [expect.objectContaining({ message: 'Unexpected error.', path: ['ticks', 'fail'], extensions: { code: 'INTERNAL_SERVER_ERROR', requestId: 'request-1' } })],
    });
    // The failed stream: a last result, then the end.
    expect(events[2]).toEqual({ data: null, errors: [expect.objectContaining({ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR', requestId: 'request-1' } })] });
    expect(events).toHaveLength(3);
    expect(body).toContain('event: complete');
    expect(body).not.toContain('secret_table');
    const logged = logs.records().filter((record) => record.msg === 'unexpected error');
    expect(logged).toHaveLength(2);
    for (const record of logged) {
      expect(record.requestId).toBe('request-1');
      expect(JSON.stringify(record.err)).toContain('secret_table');
    }
  });

  it('masks a stream that throws something other than an Error as well', async () => {
    const { body, events, logs } = await subscribe(() => SECRET as unknown as Error);
    expect(events.at(-1)).toEqual({ data: null, errors: [expect.objectContaining({ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR', requestId: 'request-1' } })] });
    expect(body).not.toContain('secret_table');
    expect(JSON.stringify(logs.records().filter((record) => record.msg === 'unexpected error'))).toContain('secret_table');
  });

  it('ends a stream that fails as expected with its own error and code, unmasked', async () => {
    const slow = await subscribe(() => new SlowConsumerError(1));
    expect(slow.events.at(-1)).toEqual({ data: null, errors: [expect.objectContaining({ extensions: { code: 'SLOW_CONSUMER', lastSeq: 1 } })] });
    const gone = await subscribe(() => new NotFoundError('Generation not found.'));
    expect(gone.events.at(-1)).toEqual({ data: null, errors: [expect.objectContaining({ message: 'Generation not found.', extensions: { code: 'NOT_FOUND' } })] });
  });
});
