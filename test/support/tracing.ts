import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { afterAll, beforeAll } from 'vitest';
import { parseConfig } from '../../src/config.js';
import { startTracing, type Tracing } from '../../src/observability/tracing.js';

/** Turns tracing on in the server's config; the in-memory processor replaces the OTLP exporter it names. */
export const tracingEnv = { OTEL_TRACES_EXPORTER: 'otlp', OTEL_SERVICE_NAME: 'kiln-test' };

/** The SDK started for the file's tests as main.ts starts it; the returned exporter keeps every span. */
export function useInMemoryTracing(): InMemorySpanExporter {
  const exporter = new InMemorySpanExporter();
  let tracing: Tracing | undefined;
  beforeAll(async () => {
    tracing = await startTracing(parseConfig(tracingEnv).tracing, { spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  });
  afterAll(async () => {
    await tracing?.shutdown();
  });
  return exporter;
}
