import { SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { DrizzleQueryError } from 'drizzle-orm/errors';
import { describe, expect, it } from 'vitest';
import { LlmError } from '../src/llm/provider.js';
import { failSpan, startSpan } from '../src/observability/tracing.js';
import { waitUntil } from './support/cluster.js';
import { useTestServer } from './support/server.js';
import { tracingEnv, useInMemoryTracing } from './support/tracing.js';

// Spans leave the process for a trace backend: what a failed operation, model call or
// build step records of its errors must never carry the user's input or a query's
// bound parameters (passwords, secret values, password hashes), only what kind of
// failure it was. The span is still marked as failed.

const exporter = useInMemoryTracing();

/** Everything a span exports as text: its attributes, its events' names and attributes, its status message. */
const textOf = (span: ReadableSpan) => JSON.stringify([span.attributes, span.events, span.status]);

async function operationSpan(name: string): Promise<ReadableSpan> {
  await waitUntil(() => exporter.getFinishedSpans().some((span) => span.name === name), 10_000, () => `no span ${name}`);
  return exporter.getFinishedSpans().find((span) => span.name === name)!;
}

describe('the spans of failed GraphQL operations', () => {
  const server = useTestServer(tracingEnv);

  it('record no variable that an input-coercion error echoes, and are still errors', async () => {
    // A field too many, then one missing: graphql-js quotes the whole input object in its message.
    const signIn = await server.client().post({
      query: 'mutation SignIn($input: SignInInput!) { signIn(input: $input) { __typename } }',
      variables: { input: { email: 'a@example.com', password: 'PLAINTEXT-PASSWORD-123', rememberMe: true } },
    });
    expect(JSON.stringify(await signIn.json())).toContain('PLAINTEXT-PASSWORD-123');
    const anonymous = await server.client().post({
      query: 'mutation ($input: SetProjectSecretInput!) { setProjectSecret(input: $input) { __typename } }',
      variables: { input: { name: 'OPENAI_API_KEY', value: 'sk-PLAINTEXT-PROJECT-SECRET' } },
    });
    expect(JSON.stringify(await anonymous.json())).toContain('sk-PLAINTEXT-PROJECT-SECRET');

    const signInSpan = await operationSpan('mutation.SignIn');
    const anonymousSpan = await operationSpan('mutation.anonymous');
    for (const span of exporter.getFinishedSpans()) {
      expect(textOf(span)).not.toContain('PLAINTEXT-PASSWORD-123');
      expect(textOf(span)).not.toContain('sk-PLAINTEXT');
    }
    expect(signInSpan.status.code).toBe(SpanStatusCode.ERROR);
    // The error is still there, as its code: graphql-js's own carry none.
    expect(signInSpan.events[0]!.attributes).toEqual({ 'exception.type': 'graphql.execute.error', 'exception.message': '[{"message":"GRAPHQL_ERROR"}]' });
    expect(anonymousSpan.status.code).toBe(SpanStatusCode.ERROR);
  });

  it('record the type of an unexpected database error, never its bound parameters', async () => {
    // Every insert of a credential fails, so the error carries the new password hash as a parameter.
    await server.database.execScript('alter table local_credentials add constraint fail_all check (false) not valid');
    try {
      const response = await server.client().post({
        query: 'mutation SignUp($email: String!, $password: String!) { signUp(input: { email: $email, password: $password }) { __typename } }',
        variables: { email: 'victim@example.com', password: 'correct horse battery staple 1' },
      });
      expect((await response.json()).errors[0].extensions.code).toBe('INTERNAL_SERVER_ERROR');
    } finally {
      await server.database.execScript('alter table local_credentials drop constraint fail_all');
    }
    const span = await operationSpan('mutation.SignUp');
    expect(span.status.code).toBe(SpanStatusCode.ERROR);
    expect(span.events[0]!.attributes!['exception.message']).toBe('[{"message":"INTERNAL_SERVER_ERROR","path":["signUp"],"extensions":{"type":"DrizzleQueryError"}}]');
    expect(textOf(span)).not.toMatch(/scrypt|params|victim@example\.com|correct horse/);
  });
});

describe('failSpan', () => {
  /** The exported span of one failure recorded with failSpan. */
  function failedWith(name: string, error: unknown): ReadableSpan {
    const span = startSpan(name, {});
    failSpan(span, error);
    span.end();
    return exporter.getFinishedSpans().find((each) => each.name === name)!;
  }

  it('records the class and message of a failed query without the bound parameters its message carries', () => {
    const span = failedWith('failing query', new DrizzleQueryError('insert into "local_credentials" ("password_hash") values ($1)', ['scrypt$secret-hash']));
    expect(span.status.code).toBe(SpanStatusCode.ERROR);
    expect(textOf(span)).not.toContain('secret-hash');
    expect(span.attributes['error.type']).toBe('DrizzleQueryError');
    expect(span.events[0]!.attributes).toMatchObject({
      'exception.type': 'DrizzleQueryError',
      'exception.message': 'Failed query: insert into "local_credentials" ("password_hash") values ($1)\nparams: [redacted]',
    });
  });

  it("records a Kiln run error's code", () => {
    const span = failedWith('failing model call', new LlmError('The provider refused the request.'));
    expect(span.attributes['error.type']).toBe('LlmError');
    expect(span.events[0]!.attributes).toMatchObject({ 'exception.type': 'LLM_ERROR', 'exception.message': 'The provider refused the request.' });
  });
});
