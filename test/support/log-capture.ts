import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { type Environment, parseConfig } from '../../src/config.js';
import { startKiln } from '../../src/main.js';
import { createLogger } from '../../src/observability/logger.js';
import { type TestDatabase, createTestDatabase } from './db.js';
import { graphqlClient } from './fixtures.js';
import { type TestServer, unsandboxedBuilds } from './server.js';

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
  dataDir: string;
}

/** Like startTestServer, with the logger writing (at LOG_LEVEL, default trace) into `logs`. */
export async function startCapturedServer(env: Environment = {}, database?: TestDatabase): Promise<CapturedServer> {
  const db = database ?? (await createTestDatabase());
  const dataDir = await mkdtemp(path.join(tmpdir(), 'kiln-logs-'));
  const config = parseConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'trace', OFFLINE_CHUNK_DELAY_MS: '0', ...unsandboxedBuilds, ...env });
  const logs = new LogCapture();
  const kiln = await startKiln(config, { database: db, port: 0, logger: createLogger(config.logLevel, logs) }).catch(async (error: unknown) => {
    if (!database) await db.close();
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  });
  return {
    url: kiln.url,
    database: db,
    logs,
    dataDir,
    client: (token) => graphqlClient(kiln.url, token),
    stop: async () => {
      await kiln.stop();
      if (!database) await db.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
