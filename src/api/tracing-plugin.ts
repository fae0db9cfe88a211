import { SpanKind, trace } from '@opentelemetry/api';
import { type ExecutionResult, GraphQLError } from 'graphql';
import { isAsyncIterable, mapMaybePromise, type Plugin } from 'graphql-yoga';
import { expected } from './stream-errors.js';

// One SERVER span per GraphQL operation (HTTP, SSE and graphql-ws alike), named
// `mutation.StartGeneration` and so on; resolvers run inside it, so a generation's job
// carries its context (observability/tracing.ts). Added only when tracing is on.
//
// The plugin is handed the API's global tracer provider, which the SDK registered: left
// without one it would start a console exporter of its own (on its older sdk-trace-base).
// Variables and results are never recorded (prompts, tokens); the document only when it
// has no inline arguments; errors only as their codes (recordingCodesOnly).

// Loaded only when tracing is on (startKiln): @envelop/opentelemetry is some 140 modules to load at start-up.
let openTelemetry: typeof import('@envelop/opentelemetry') | undefined;

export async function loadTracingPlugin(): Promise<void> {
  openTelemetry ??= await import('@envelop/opentelemetry');
}

export function useTracing(): Plugin {
  if (!openTelemetry) throw new Error('useTracing() needs loadTracingPlugin() first');
  return recordingCodesOnly(
    openTelemetry.useOpenTelemetry({ resolvers: false, variables: false, result: false }, trace.getTracerProvider(), SpanKind.SERVER, {}, 'kiln') as Plugin,
  );
}

/**
 * @envelop/opentelemetry marks a failed result's span as an error and writes its errors
 * whole into an exception event, with no option to leave them out. Their messages can
 * quote variables (graphql-js's coercion error quotes a mis-shaped input object, password
 * and all) or, as the plugin runs before the masking one, a failed query's bound
 * parameters (a password hash). So its hooks see each result with its errors reduced to
 * codes; the result the client gets is untouched.
 */
function recordingCodesOnly(plugin: Plugin): Plugin {
  const { onExecute, onSubscribe } = plugin;
  return {
    ...plugin,
    onExecute:
      onExecute &&
      ((payload) =>
        mapMaybePromise(onExecute(payload), (hooks) => {
          const onExecuteDone = hooks?.onExecuteDone;
          return (
            onExecuteDone && {
              onExecuteDone: (done) =>
                mapMaybePromise(onExecuteDone(isAsyncIterable(done.result) ? done : { ...done, result: codesOnly(done.result) }), (stream) => stream && nextWithCodesOnly(stream)),
            }
          );
        })),
    onSubscribe:
      onSubscribe &&
      ((payload) =>
        mapMaybePromise(onSubscribe(payload), (hooks) => {
          const onSubscribeResult = hooks?.onSubscribeResult;
          return (
            hooks && {
              ...hooks,
              onSubscribeResult: onSubscribeResult && ((subscribed) => {
                const stream = onSubscribeResult(subscribed);
                return stream && nextWithCodesOnly(stream);
              }),
            }
          );
        })),
  };
}

interface StreamHooks<Next> {
  onNext?: (next: Next) => void | Promise<void>;
  onEnd?: () => void;
}

/** A stream's hooks, whose `onNext` sees each result with codes only. */
function nextWithCodesOnly<Next extends { result: ExecutionResult }>(stream: StreamHooks<Next>): StreamHooks<Next> {
  const { onNext } = stream;
  return { ...stream, onNext: onNext && ((next: Next) => onNext({ ...next, result: codesOnly(next.result) })) };
}

function codesOnly(result: ExecutionResult): ExecutionResult {
  return result.errors?.length ? { ...result, errors: result.errors.map(codeOnly) } : result;
}

/**
 * An error as its code alone: the one it carries, or that of Kiln's own typed error;
 * INTERNAL_SERVER_ERROR with the class of an unexpected one (masked after this plugin;
 * the log has it in full); GRAPHQL_ERROR for graphql-js's own (a variable of the wrong shape).
 */
function codeOnly(error: GraphQLError): GraphQLError {
  const { originalError, path } = error;
  const unexpected = originalError && !(originalError instanceof GraphQLError) ? originalError : undefined;
  const code = error.extensions.code ?? (unexpected && expected(unexpected)?.extensions.code);
  if (code) return new GraphQLError(String(code), { path });
  if (unexpected) return new GraphQLError('INTERNAL_SERVER_ERROR', { path, extensions: { type: unexpected.constructor.name } });
  return new GraphQLError('GRAPHQL_ERROR', { path });
}
