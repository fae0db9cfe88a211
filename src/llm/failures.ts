import { type LlmEvent, LlmError, type LlmUsage, OutputLimitError } from './provider.js';

/** Who failed, and which settings a user can change about it. */
export interface Upstream {
  /** Subject of a sentence: "Gemini", "The OpenAI-compatible server". */
  label: string;
  model: string;
  keyHint: string;
  modelHint: string;
  /** The key sent, which no message or log line may quote (a provider's error text may echo it). */
  apiKey?: string;
}

const MAX_DETAIL_LENGTH = 300;

/**
 * Maps an HTTP error status to a message a user can act on; 408, 429 and 5xx are
 * retryable, after the delay the provider asked for when it said (`Retry-After`, or
 * Gemini's RetryInfo in the error body).
 */
export function httpFailure(upstream: Upstream, status: number, body: string, retryAfterHeader?: string | null): LlmError {
  const failure = describeHttpFailure(upstream, status, body);
  if (!failure.retryable) return failure;
  const afterMs = retryAfterMs(retryAfterHeader) ?? retryInfoDelayMs(body);
  return new LlmError(failure.message, true, { status, ...(afterMs === undefined ? {} : { afterMs }) }, failure.cause);
}

/**
 * Every member of the project (viewers too) reads the message: it quotes only the
 * `error.message` of a JSON error body ("model not found" is worth seeing), never any other
 * body (a proxy's HTML page names its server version and internal hosts), and never a key
 * rejection's text (Google's 403 names the key: "Consumer 'api_key:…' has been suspended").
 * The body goes to the server's log, as the error's cause. Keys are scrubbed from both.
 */
function describeHttpFailure(upstream: Upstream, status: number, body: string): LlmError {
  const { label } = upstream;
  const keyRejected = status === 401 || status === 403 || (status === 400 && /api[ _-]?key/i.test(body));
  const message = keyRejected ? undefined : upstreamMessage(body, upstream.apiKey);
  const detail = message === undefined ? `status ${status}` : `${status}: ${message}`;
  const cause = message === undefined ? new Error(`${label} answered ${status}: ${scrubKeys(body.trim(), upstream.apiKey) || '(no body)'}`) : undefined;
  const failure = (text: string, retryable = false) => new LlmError(text, retryable, {}, cause);
  if (keyRejected) return failure(`${label} rejected the API key (${detail}); ${upstream.keyHint}.`);
  if (status === 400) return failure(`${label} rejected the request (${detail}).`);
  if (status === 404) return failure(`${label} has no model "${upstream.model}" (${detail}); ${upstream.modelHint}.`);
  if (status === 429) return failure(`${label} is rate limiting requests (${detail}); wait a minute and try again.`, true);
  if (status === 408 || status >= 500) return failure(`${label} is unavailable right now (${detail}); try again later.`, true);
  return failure(`${label} failed (${detail}).`);
}

/** What looks like a key in a provider's text: Google's, its `api_key:<…>` consumer name, OpenAI-style `sk-…`. */
const KEY_SHAPES = [/AIza[0-9A-Za-z_-]{35}/g, /api_key:[^\s'"`,;)]+/g, /\bsk-[A-Za-z0-9_*.-]{6,}/g];
/** Shorter keys are left to the shapes: replacing every "k" of a message would say nothing safer. */
const MIN_SCRUBBED_KEY_LENGTH = 8;

/** `text` without the key sent, nor anything shaped like a key. */
export function scrubKeys(text: string, apiKey?: string): string {
  let scrubbed = apiKey && apiKey.length >= MIN_SCRUBBED_KEY_LENGTH ? text.replaceAll(apiKey, '[redacted]') : text;
  for (const shape of KEY_SHAPES) scrubbed = scrubbed.replace(shape, (found) => (found.startsWith('api_key:') ? 'api_key:[redacted]' : '[redacted]'));
  return scrubbed;
}

/** `Retry-After` as seconds or an HTTP date, in milliseconds from now. */
export function retryAfterMs(header: string | null | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const trimmed = header.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** google.rpc.RetryInfo's retryDelay ("7s", "0.25s") in a Google error body, in milliseconds. */
export function retryInfoDelayMs(body: string): number | undefined {
  const start = body.indexOf('{');
  if (start < 0) return undefined;
  try {
    const parsed = JSON.parse(body.slice(start)) as { error?: { details?: { '@type'?: string; retryDelay?: unknown }[] } };
    for (const detail of parsed.error?.details ?? []) {
      if (!detail['@type']?.endsWith('google.rpc.RetryInfo')) continue;
      const match = typeof detail.retryDelay === 'string' ? /^(\d+(?:\.\d+)?)s$/.exec(detail.retryDelay) : null;
      if (match) return Math.round(Number(match[1]) * 1000);
    }
  } catch {
    // Not JSON: no RetryInfo.
  }
  return undefined;
}

/** A connection that broke once the answer had begun; retried only if no text had arrived yet. */
export function interruptedFailure(label: string, error: unknown): LlmError {
  return new LlmError(`The ${label} stream was interrupted (${transportDetail(error)}); try again.`, true, { status: 'network' });
}

/**
 * A request that never got an answer: wrong address, DNS, refused connection. Every member
 * of the project reads the message, so it names the settings to check, never their value or
 * the address the transport error gives (an internal host, credentials in a URL): those go
 * to the server's log with the cause.
 */
export function unreachableFailure(label: string, settings: string, error: unknown): LlmError {
  return new LlmError(`Could not reach ${label}; the server's operator should check ${settings}.`, true, { status: 'network' }, error);
}

/**
 * The `error.message` of a JSON error body (Google and OpenAI shapes, or vLLM's top-level
 * `message`), shortened and without keys (scrubKeys); undefined
 * for any other body, which a user never sees. @google/genai wraps a body that is not JSON as
 * `{ error: { message: <the text>, code, status: <the HTTP reason phrase> } }`, where Google's
 * own bodies carry a google.rpc code name (NOT_FOUND): such a message is the raw body, and so
 * is one that holds markup.
 */
export function upstreamMessage(body: string, apiKey?: string): string | undefined {
  const start = body.indexOf('{');
  if (start < 0) return undefined;
  let parsed: { error?: { message?: unknown; status?: unknown } | string; object?: unknown; message?: unknown } | null;
  try {
    parsed = JSON.parse(body.slice(start)) as typeof parsed;
  } catch {
    return undefined;
  }
  const error = parsed?.error;
  // vLLM and Mistral answer `{ "object": "error", "message": … }`.
  const message = typeof error === 'string' ? error : (error?.message ?? (parsed?.object === 'error' ? parsed.message : undefined));
  if (typeof message !== 'string' || !message.trim()) return undefined;
  if (typeof error === 'object' && typeof error.status === 'string' && !/^[A-Z][A-Z_]*$/.test(error.status)) return undefined;
  if (/<\/?[a-z][^<>]*>/i.test(message)) return undefined;
  // Scrubbed before it is shortened: a cut could leave a key's start that no shape matches.
  return shorten(scrubKeys(message, apiKey));
}

function transportDetail(error: unknown): string {
  if (!(error instanceof Error)) return shorten(String(error));
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return shorten(`${error.message}${cause}`);
}

function shorten(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > MAX_DETAIL_LENGTH ? `${flat.slice(0, MAX_DETAIL_LENGTH)}…` : flat;
}

/**
 * The end of one streamed answer: what it cost, when the provider counted it (spent even
 * when the answer failed; a cut answer's usage travels with its OutputLimitError), then
 * why it is not whole, if it is not.
 */
export function* answerEnd(failure: LlmError | undefined, usage: LlmUsage | undefined): Generator<LlmEvent> {
  if (usage && !(failure instanceof OutputLimitError)) yield { type: 'usage', usage };
  if (failure) throw failure;
}
