import type { Logger } from '../observability/logger.js';

// Bookkeeping shared by the event targets: which topics this process listens to, and
// handing an event to their callbacks, so that one that throws is logged and never
// stops the others or ends the process.

export type Callback = (event: CustomEvent) => void;
export type CallbackOrHandler = Callback | { handleEvent: Callback } | null | undefined;

/** An EventTarget for yoga's createPubSub that reaches other processes, and says how it is doing. */
export interface CrossProcessEventTarget {
  addEventListener(topic: string, callback: CallbackOrHandler): void;
  removeEventListener(topic: string, callback: CallbackOrHandler): void;
  dispatchEvent(event: Event): boolean;
  /** Resolves once the connections are ready (or after `timeoutMs`, leaving the retries running). */
  start(timeoutMs?: number): Promise<void>;
  /** True while delivery is known to work. */
  readonly connected: boolean;
  /** How many times delivery was re-established after the first time. */
  readonly reconnects: number;
  close(): Promise<void>;
}

export class LocalListeners {
  private readonly byTopic = new Map<string, Set<Callback>>();

  /** Returns true when this is the topic's first listener. */
  add(topic: string, callbackOrHandler: CallbackOrHandler): boolean {
    const callback = unwrap(callbackOrHandler);
    if (!callback) return false;
    let callbacks = this.byTopic.get(topic);
    const first = callbacks === undefined;
    if (!callbacks) this.byTopic.set(topic, (callbacks = new Set()));
    callbacks.add(callback);
    return first;
  }

  /** Returns true when the topic's last listener went. */
  remove(topic: string, callbackOrHandler: CallbackOrHandler): boolean {
    const callback = unwrap(callbackOrHandler);
    const callbacks = this.byTopic.get(topic);
    if (!callback || !callbacks) return false;
    callbacks.delete(callback);
    if (callbacks.size > 0) return false;
    this.byTopic.delete(topic);
    return true;
  }

  has(topic: string): boolean {
    return this.byTopic.has(topic);
  }

  topics(): string[] {
    return [...this.byTopic.keys()];
  }

  /** After a reconnect (or a subscription Redis has just confirmed): hands each topic what `resync` read from the database. */
  async resync(resync: ((topic: string) => Promise<unknown>) | undefined, log: Logger, warn: ReturnType<typeof throttledWarn>, topics = this.topics()) {
    if (!resync) return;
    for (const topic of topics) {
      if (!this.has(topic)) continue;
      try {
        const detail = await resync(topic);
        if (detail !== undefined) this.deliver(topic, detail, log);
      } catch (error) {
        warn({ err: error, topic }, 'catching up after a reconnect failed');
      }
    }
  }

  /** Hands `detail` to every callback of `topic`. */
  deliver(topic: string, detail: unknown, log: Logger): void {
    if (this.byTopic.has(topic)) this.dispatch(new CustomEvent(topic, { detail }), log);
  }

  /** Hands `event` to every callback of its topic; one failing callback is logged and does not stop the others. */
  dispatch(event: Event, log: Logger): void {
    const callbacks = this.byTopic.get(event.type);
    if (!callbacks) return;
    // Callbacks added while dispatching wait for the next event, as with EventTarget.
    for (const callback of [...callbacks]) {
      try {
        callback(event as CustomEvent);
      } catch (error) {
        log.warn({ err: error, topic: event.type }, 'an event listener failed');
      }
    }
  }
}

function unwrap(callbackOrHandler: CallbackOrHandler): Callback | undefined {
  if (!callbackOrHandler) return undefined;
  // Unbound, as EventTarget implementations do: the same handler object maps to the same callback.
  return typeof callbackOrHandler === 'function' ? callbackOrHandler : callbackOrHandler.handleEvent;
}

/**
 * Logs a recurring failure once, then at most once per `everyMs` with a count, so an
 * outage of the database or Redis does not flood the log.
 */
export function throttledWarn(log: Logger, everyMs = 10_000) {
  let last = 0;
  let suppressed = 0;
  return (fields: Record<string, unknown>, message: string) => {
    const now = Date.now();
    if (now - last < everyMs) {
      suppressed++;
      return;
    }
    log.warn({ ...fields, ...(suppressed ? { suppressed } : {}) }, message);
    last = now;
    suppressed = 0;
  };
}
