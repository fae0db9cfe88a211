/**
 * Node's fetch for a model provider's requests (both providers use it). Node's fetch gives up on a
 * response after 300 s without headers or without a byte (undici's headersTimeout and bodyTimeout),
 * which a model thinking in silence, or a local server reading a long prompt before it answers,
 * can take: it would fail with a misleading "Could not reach…" and be retried. Both are lifted here,
 * through the global dispatcher undici keeps under this symbol (as @google/genai does for its own
 * fetch); resilientStream bounds the waits instead (the first event's text timeout, the idle
 * timeout, the answer timeout) and aborts the request when one runs out.
 */
export function upstreamFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  return fetch(input, { ...init, dispatcher: WITHOUT_UNDICI_TIMEOUTS } as RequestInit);
}

const UNDICI_GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');
const WITHOUT_UNDICI_TIMEOUTS = {
  dispatch(options: object, handler: unknown): boolean {
    const global = (globalThis as unknown as Record<symbol, { dispatch(options: object, handler: unknown): boolean } | undefined>)[UNDICI_GLOBAL_DISPATCHER];
    if (!global) throw new Error("Node's fetch has no global dispatcher.");
    return global.dispatch({ ...options, headersTimeout: 0, bodyTimeout: 0 }, handler);
  },
};
