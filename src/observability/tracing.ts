import {
  type Attributes,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';
import type { NodeSDKConfiguration } from '@opentelemetry/sdk-node';
import type { SerializedError } from 'pino';
import type { Config } from '../config.js';
import { serializeError } from './logger.js';

// OpenTelemetry traces (DESIGN "Observability"; README "Tracing"). Kiln codes against
// @opentelemetry/api only: without a started SDK its tracer is the API's no-op one and
// its propagator writes nothing, so tracing costs nothing when it is off. The SDK is
// loaded and started only when config.tracing.enabled (an OTEL_* exporter or endpoint
// is set); it then reads the other OTEL_* variables from process.env itself.
//
// One trace follows a generation: the GraphQL operation span (api/tracing-plugin.ts) →
// the job's trace context (W3C traceparent, carried by the queue) → the worker's run span
// → the model call and each build step.

// Looked up per span, never kept from import time: a tracer taken before startTracing registered
// the SDK is a proxy only the API copy that took it can switch over, and a bundle holding a copy of
// its own (scripts/build-server.mjs keeps one outside) would trace nothing.
const tracer = () => trace.getTracer('kiln');

export interface Tracing {
  /** Exports what is buffered and stops the SDK. */
  shutdown(): Promise<void>;
}

/** The span processors replace the exporters OTEL_TRACES_EXPORTER names (tests use an in-memory one). */
export interface TracingOptions {
  spanProcessors?: NodeSDKConfiguration['spanProcessors'];
}

/** Starts the SDK when tracing is on; undefined (nothing loaded, nothing started) when it is off. */
export async function startTracing(config: Config['tracing'], options: TracingOptions = {}): Promise<Tracing | undefined> {
  if (!config.enabled) return undefined;
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const sdk = new NodeSDK({
    serviceName: config.serviceName,
    ...(options.spanProcessors ? { spanProcessors: options.spanProcessors } : {}),
    // Traces only: metrics stay with prom-client (/metrics), logs with pino.
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}

/** A job's trace context as W3C headers (`traceparent`, `tracestate`); undefined when nothing is traced. */
export type TraceCarrier = Record<string, string>;

/** The active trace context, to send with a job. */
export function currentTraceCarrier(): TraceCarrier | undefined {
  const carrier: TraceCarrier = {};
  propagation.inject(context.active(), carrier);
  return Object.keys(carrier).length > 0 ? carrier : undefined;
}

/**
 * Runs a job's work under a CONSUMER span whose parent is the context the job was sent
 * with (a new trace when it carried none), never under whatever context happened to be
 * active in the worker.
 */
export function inJobSpan<T>(name: string, carrier: TraceCarrier | undefined, attributes: Attributes, work: (span: Span) => Promise<T>): Promise<T> {
  const parent = carrier ? propagation.extract(ROOT_CONTEXT, carrier) : ROOT_CONTEXT;
  return context.with(parent, () => inSpan(name, attributes, work, SpanKind.CONSUMER));
}

/** Runs `work` under a new active span, ended when it settles and marked as an error when it throws. */
export function inSpan<T>(name: string, attributes: Attributes, work: (span: Span) => Promise<T>, kind = SpanKind.INTERNAL): Promise<T> {
  return tracer().startActiveSpan(name, { kind, attributes }, async (span) => {
    try {
      return await work(span);
    } catch (error) {
      failSpan(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/** A span that is not made active (nothing under it needs a parent); end it with `endSpan`. */
export function startSpan(name: string, attributes: Attributes, kind = SpanKind.INTERNAL): Span {
  return tracer().startSpan(name, { kind, attributes });
}

/**
 * Marks the span as failed with the error's class, code and message, the message and
 * stack scrubbed as a log line's are: spans leave for the trace backend, and a failed
 * query's message carries its bound parameters (a password hash, a secret's ciphertext).
 */
export function failSpan(span: Span, error: unknown): void {
  const { type, code, message, stack } = serializeError(error instanceof Error ? error : new Error(String(error))) as SerializedError;
  // exception.type is the code when there is one (a RunError's); error.type keeps the class.
  span.recordException({ name: type, code, message, stack });
  span.setAttribute('error.type', type);
  span.setStatus({ code: SpanStatusCode.ERROR, message });
}
