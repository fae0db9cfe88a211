import { Writable } from 'node:stream';
import type { Environment } from '../../src/config.js';
import type { TestDatabase } from './db.js';
import { type TestServer, startTestServer } from './server.js';

/** Every line pino wrote, as written and parsed. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void) {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    done();
  }

  get text(): string {
    return this.lines.join('\n');
  }

  records(): Record<string, unknown>[] {
    return this.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  }
}

export interface CapturedServer extends TestServer {
  logs: LogCapture;
}

/** startTestServer with the logger writing (at LOG_LEVEL, default trace) into `logs`. */
export async function startCapturedServer(env: Environment = {}, database?: TestDatabase): Promise<CapturedServer> {
  const logs = new LogCapture();
  const server = await startTestServer({ LOG_LEVEL: 'trace', ...env }, { database, logTo: logs });
  return { ...server, logs };
}
