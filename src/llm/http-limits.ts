// What a provider reads of an upstream's answer is bounded, whatever the upstream sends.

/** The most bytes held for a line of an event stream whose end has not come (one chunk is a line); more fails the answer, not retried. */
export const MAX_SSE_LINE_BYTES = 1024 * 1024;
/** The most data one server-sent event may carry (its data lines together). */
export const MAX_SSE_EVENT_BYTES = MAX_SSE_LINE_BYTES;
/** How much of an error answer's body is read (for its `error.message`, and the log); the rest is dropped. */
export const MAX_ERROR_BODY_BYTES = 64 * 1024;

/** At most `limit` bytes of a body, as text; the rest is not read (the connection is released). */
export async function bodyStart(response: Response, limit: number): Promise<string> {
  if (!response.body) return '';
  const parts: Uint8Array[] = [];
  let length = 0;
  const reader = response.body.getReader();
  try {
    while (length < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value.subarray(0, limit - length));
      length += Math.min(value.length, limit - length);
    }
  } finally {
    void reader.cancel().catch(() => {});
  }
  return new TextDecoder().decode(Buffer.concat(parts));
}
