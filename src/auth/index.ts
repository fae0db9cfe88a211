import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import type { Logger } from '../observability/logger.js';
import { createLocalAuth } from './local.js';
import type { AuthProvider } from './provider.js';

export type { AuthProvider, AuthSession, AuthUser, SignOutScope } from './provider.js';

/** The configured provider: Supabase Auth, or the embedded local one (the default). */
export async function createAuthProvider(auth: Config['auth'], db: Db, logger?: Logger): Promise<AuthProvider> {
  if (auth.provider === 'local') {
    return createLocalAuth({
      db,
      accessTokenTtlSeconds: auth.accessTokenTtlSeconds,
      sessionMaxAgeSeconds: auth.sessionMaxAgeSeconds,
      jwtSecret: auth.jwtSecret,
      logger,
    });
  }
  const { url, anonKey, serviceRoleKey, jwtSecret, requestTimeoutMs } = auth.supabase;
  // parseConfig refuses AUTH_PROVIDER=supabase without these; this guards other callers.
  if (!url || !anonKey) throw new Error('The supabase auth provider needs SUPABASE_URL and SUPABASE_ANON_KEY');
  // Loaded only for this provider: supabase-js is dozens of modules the embedded auth never needs.
  const { createSupabaseAuth } = await import('./supabase.js');
  return createSupabaseAuth({ db, url, anonKey, serviceRoleKey, jwtSecret, requestTimeoutMs });
}
