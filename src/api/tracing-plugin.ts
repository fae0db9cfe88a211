import { SpanKind, trace } from '@opentelemetry/api';
import type { Plugin } from 'graphql-yoga';

// One SERVER span per GraphQL operation (HTTP, SSE and graphql-ws alike), named
// `mutation.StartGeneration` and so on; resolvers run inside it, so a generation's job
// carries its context (observability/tracing.ts). Added only when tracing is on.
//
// The plugin is handed the API's global tracer provider, which the SDK registered: left
// without one it would start a console exporter of its own (on its older sdk-trace-base).
// Variables and results are never recorded (prompts, tokens); the document only when it
// has no inline arguments.

// Loaded only when tracing is on (startKiln): @envelop/opentelemetry is some 140 modules to load at start-up.
let openTelemetry: typeof import('@envelop/opentelemetry') | undefined;

export async function loadTracingPlugin(): Promise<void> {
  openTelemetry ??= await import('@envelop/opentelemetry');
}

export function useTracing(): Plugin {
  if (!openTelemetry) throw new Error('useTracing() needs loadTracingPlugin() first');
  return openTelemetry.useOpenTelemetry({ resolvers: false, variables: false, result: false }, trace.getTracerProvider(), SpanKind.SERVER, {}, 'kiln') as Plugin;
}
