// Suites that install from the npm registry (the real WEB toolchain) are opt-in, so
// `npm test` passes on a machine without one: KILN_TEST_NETWORK=1 runs them.

/** Why a registry suite is skipped here, or undefined when KILN_TEST_NETWORK=1 lets it run. */
export const registryUnavailable: string | undefined =
  process.env.KILN_TEST_NETWORK === '1' ? undefined : 'needs the npm registry: set KILN_TEST_NETWORK=1 to run it';
