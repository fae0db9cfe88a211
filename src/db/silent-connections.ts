import { connect, type Socket } from 'node:net';
import { Duplex } from 'node:stream';

// A database host that vanishes without a FIN or RST (a managed-Postgres failover leaving
// half-open sockets, a network partition) leaves every pooled connection waiting for TCP to
// give up, 10-15 minutes, although new connections would work within seconds. postgres.js
// has no query timeout, so its sockets are watched here: a connection that sent something
// and heard nothing back for the silence limit is destroyed with a connection error, which
// rejects what waited on it (the outage retry then runs it again on a new connection).
// Statements Kiln runs in requests and runs are short; one that legitimately outlasts the
// limit (a long lock wait) is cut the same way (migrations use a client of their own).

/** What postgres.js passes its `socket` option: its parsed connection options. */
interface ConnectOptions {
  host: string[];
  port: number[];
  path: string | false;
  keep_alive: number | null | false;
}

/**
 * postgres.js's `socket` option for connections watched for silence: sockets to the URL's
 * host and port (or its unix socket), destroyed with an ETIMEDOUT error once they have
 * awaited a reply for `limitMs` without receiving a byte. TLS is negotiated by postgres.js
 * over them as over its own. One timer checks every socket, running only while there are
 * sockets. Idle connections (nothing written since the last byte received, a LISTEN
 * waiting for notifications) are never cut.
 */
export function watchForSilence(limitMs: number): (options: ConnectOptions) => Duplex {
  const sockets = new Set<WatchedSocket>();
  let sweeper: NodeJS.Timeout | undefined;
  const sweep = () => {
    const now = performance.now();
    for (const socket of sockets) {
      if (socket.awaitingSince !== undefined && now - socket.awaitingSince >= limitMs) socket.destroy(silenceError(limitMs));
    }
  };
  return (options) => {
    const inner = options.path ? connect(options.path) : connect(options.port[0]!, options.host[0]);
    // What postgres.js does to sockets of its own: it holds this stream, or TLS over it, instead.
    if (options.keep_alive) inner.setKeepAlive(true, 1000 * options.keep_alive);
    const socket = new WatchedSocket(inner, options.path ? {} : { host: options.host[0]!, port: options.port[0]! });
    sockets.add(socket);
    // Checked a quarter of the limit apart: a silent connection goes within 1.25 limits.
    sweeper ??= setInterval(sweep, limitMs / 4).unref();
    // On the socket itself: postgres.js removes every listener of the stream before TLS.
    inner.once('close', () => {
      sockets.delete(socket);
      if (sockets.size > 0) return;
      clearInterval(sweeper);
      sweeper = undefined;
    });
    return socket;
  };
}

/** How much of a write goes to the socket at a time (see WatchedSocket.writeFrom). */
const WRITE_PIECE_BYTES = 64 * 1024;

function silenceError(limitMs: number): Error {
  // ETIMEDOUT: a connection error to isConnectionError, as TCP's own give-up would be.
  return Object.assign(new Error(`The database sent nothing for ${limitMs / 1000} s while a reply was awaited; the connection is dropped.`), {
    code: 'ETIMEDOUT',
  });
}

/**
 * A TCP (or unix) socket as postgres.js uses it, noting when a reply began to be awaited: a
 * write starts the wait, any byte received ends it. A stream of its own rather than
 * listeners on the socket: postgres.js removes every listener of its socket before TLS, and
 * TLS over a plain socket reads it natively, unseen.
 */
class WatchedSocket extends Duplex {
  /** When the first write not followed by a received byte went out; undefined while nothing is awaited. */
  awaitingSince: number | undefined;
  // postgres.js names the server in its errors, and in TLS's SNI, by these.
  readonly host: string | undefined;
  readonly port: number | undefined;

  constructor(
    private readonly inner: Socket,
    address: { host?: string; port?: number },
  ) {
    // 'close' is the socket's own, when the socket is gone (after what an 'error' rejected has
    // queued on it, which postgres.js then drops).
    super({ emitClose: false });
    this.host = address.host;
    this.port = address.port;
    inner.on('data', (chunk: Buffer) => {
      this.awaitingSince = undefined;
      if (!this.push(chunk)) inner.pause();
    });
    inner.on('end', () => this.push(null));
    inner.on('error', (error) => this.destroy(error));
    // Once connected, a close by error is passed on as a plain close: postgres.js rejects what
    // was written between the error and the close only then (CONNECTION_CLOSED, retried); with
    // hadError it would wait on it for ever. A refused connect keeps it, for the backoff.
    let connected = false;
    inner.once('connect', () => (connected = true));
    inner.on('close', (hadError: boolean) => {
      this.destroy();
      this.emit('close', hadError && !connected);
    });
  }

  /** As net.Socket's: postgres.js says goodbye only to an open socket and waits for 'close' unless closed. */
  get readyState(): string {
    return this.destroyed ? 'closed' : this.inner.readyState;
  }

  override _read(): void {
    this.inner.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.awaitingSince ??= performance.now();
    this.writeFrom(chunk, 0, callback);
  }

  /**
   * Writes `chunk` a piece at a time: each piece the kernel takes restarts the wait, so a
   * statement still going out (a bundle's blobs in one INSERT, up to ~136 MB of hex, over a
   * slow uplink) is not taken for silence. A vanished host stops taking bytes once the
   * kernel's send buffer is full, and is caught one limit later.
   */
  private writeFrom(chunk: Buffer, from: number, callback: (error?: Error | null) => void): void {
    const to = Math.min(chunk.length, from + WRITE_PIECE_BYTES);
    this.inner.write(chunk.subarray(from, to), (error) => {
      if (error) return callback(error);
      if (this.awaitingSince !== undefined) this.awaitingSince = performance.now();
      if (to < chunk.length) this.writeFrom(chunk, to, callback);
      else callback();
    });
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.inner.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.inner.destroy();
    callback(error);
  }
}
