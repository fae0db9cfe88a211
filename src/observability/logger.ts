import pino from 'pino';

export type Logger = pino.Logger;

/**
 * Field names whose values never reach a log line, at the top level and one level
 * down (`{ input: { password } }`, `{ headers: { authorization } }`). GraphQL
 * variables are never logged whole: the operation log keeps only decoded ids.
 */
const SECRET_FIELDS = [
  'password', 'accessToken', 'refreshToken', 'token', 'authorization', 'cookie', 'apiKey', 'secret', 'value',
  'ciphertext', 'jwtSecret', 'encryptionKey', 'connectionParams', 'variables', 'params',
];

/** The root logger; modules take children with a `source` (STYLE 13). */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: undefined,
    redact: {
      paths: [...SECRET_FIELDS, ...SECRET_FIELDS.map((field) => `*.${field}`), 'req.headers.authorization', 'req.headers.cookie'],
      censor: '[redacted]',
    },
    serializers: { err: serializeError },
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * pino's error serializer, minus the bound parameters a failed query carries in its
 * message, stack and `params` (drizzle's DrizzleQueryError): they can hold password
 * hashes, keys or ciphertexts. The query text stays; it names only columns. A failed
 * span's exception is scrubbed with it too (observability/tracing.ts).
 */
export function serializeError(error: unknown): unknown {
  const serialized = pino.stdSerializers.err(error as Error) as unknown as Record<string, unknown>;
  if (!serialized || typeof serialized !== 'object') return serialized;
  return scrubQueryParams(serialized, 0);
}

const PARAMS_LINE = /\nparams: [\s\S]*?(?=\n {4}at |$)/;

function scrubQueryParams(serialized: Record<string, unknown>, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = { ...serialized };
  for (const field of ['message', 'stack'] as const) {
    if (typeof out[field] === 'string') out[field] = (out[field] as string).replace(PARAMS_LINE, '\nparams: [redacted]');
  }
  if ('params' in out) out.params = '[redacted]';
  if (out.cause && typeof out.cause === 'object' && depth < 5) out.cause = scrubQueryParams(out.cause as Record<string, unknown>, depth + 1);
  return out;
}

/**
 * The lines of one operation: its fields (request id, user, operation) are merged into
 * each line rather than kept in a child logger, whose serialized bindings would stay
 * alive as long as the operation does (a live subscription, for hours).
 */
export class OperationLog {
  constructor(
    private readonly base: Logger,
    private readonly fields: Record<string, unknown>,
  ) {}

  /** Adds fields to every later line of the operation. */
  bind(fields: Record<string, unknown>): void {
    Object.assign(this.fields, fields);
  }

  info(fields: Record<string, unknown>, message: string): void {
    this.base.info({ ...this.fields, ...fields }, message);
  }

  warn(fields: Record<string, unknown>, message: string): void {
    this.base.warn({ ...this.fields, ...fields }, message);
  }

  error(fields: Record<string, unknown>, message: string): void {
    this.base.error({ ...this.fields, ...fields }, message);
  }
}
