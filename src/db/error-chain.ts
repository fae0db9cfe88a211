/** `error` and the errors it wraps (drizzle puts the driver's error in `cause`), outermost first, at most five deep. */
export function* errorChain(error: unknown): Generator<Error & { code?: unknown }> {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) yield e;
}
