import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../src/config.js';
import { databaseKind } from './support/db.js';
import { useStarted } from './support/lifecycle.js';
import { RawSocket } from './support/live.js';
import { startCapturedServer } from './support/log-capture.js';

// Anyone may open a socket and send one bad frame before connection_init (no token
// needed): ws closes it, and Kiln logs it as one JSON line at debug level. graphql-ws on
// its own would print a stack trace to stderr for each, breaking "logs are JSON lines"
// and making a flood of logs cheap.

const DEBUG = 20;

describe(`a bad frame on a new socket (${databaseKind})`, () => {
  const server = useStarted(() => startCapturedServer());
  const maxMessageBytes = parseConfig({}).limits.maxBodyBytes;

  afterEach(() => {
    vi.restoreAllMocks();
  });

  const socketErrors = () => server.logs.records().filter((record) => record.source === 'WebSocket' && record.msg === 'socket error: the socket is closed');

  it.each([
    ['text that is not UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 1007, 'WS_ERR_INVALID_UTF8'],
    ['a message over the size limit', Buffer.alloc(maxMessageBytes + 1, 'x'), 1009, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'],
  ])('closes the socket for %s and logs it once, as a JSON line at debug level, with nothing on stderr', async (_what, frame, closeCode, errorCode) => {
    const consoleError = vi.spyOn(console, 'error');
    const stderr = vi.spyOn(process.stderr, 'write');
    const before = socketErrors().length;

    const raw = await RawSocket.open(server.url);
    try {
      raw.socket.send(frame, { binary: false });
      expect((await raw.closed).code).toBe(closeCode);
    } finally {
      raw.close();
    }

    expect(consoleError).not.toHaveBeenCalled();
    expect(stderr).not.toHaveBeenCalled();
    const logged = socketErrors().slice(before);
    expect(logged).toEqual([expect.objectContaining({ level: DEBUG, code: errorCode, clientIp: expect.any(String) })]);
  });
});
