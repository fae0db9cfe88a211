import pino from 'pino';

export type Logger = pino.Logger;

/** The root logger; modules take children with a `source` (STYLE 13). */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: undefined,
    redact: {
      paths: [
        'password', '*.password', 'accessToken', '*.accessToken', 'refreshToken', '*.refreshToken',
        'authorization', '*.authorization', 'headers.authorization', 'apiKey', '*.apiKey', 'value', '*.value',
      ],
      censor: '[redacted]',
    },
  });
}
