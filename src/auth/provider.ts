import type { Claims } from '../db/scope.js';

export type SignOutScope = 'LOCAL' | 'GLOBAL' | 'OTHERS';

export interface AuthUser {
  id: string;
  email: string;
}

export interface AuthSession {
  accessToken: string;
  refreshToken: string;
  expiresAt: Date;
  user: AuthUser;
}

/**
 * Sign-up, sign-in, refresh, sign-out and token verification, the same for the
 * embedded local provider and Supabase Auth. Expected failures throw the classes of
 * src/errors.ts (AuthError, ValidationError, RateLimitedError).
 *
 * `clientIp` is the end user's address (the request's, see api/rate-limit.ts clientAddress):
 * Supabase Auth limits sign-ins and refreshes per address, and is told it when the server key
 * allows (supabase.ts). The local provider has no use for it.
 */
export interface AuthProvider {
  signUp(email: string, password: string, clientIp?: string): Promise<AuthSession>;
  signIn(email: string, password: string, clientIp?: string): Promise<AuthSession>;
  refresh(refreshToken: string, clientIp?: string): Promise<AuthSession>;
  /** Ends the session of these claims (LOCAL), all the user's sessions (GLOBAL), or all others (OTHERS). */
  signOut(claims: Claims, accessToken: string, scope: SignOutScope): Promise<void>;
  /** Verified claims of a live session; AuthError for a bad, expired or revoked token. */
  verify(accessToken: string): Promise<Claims>;
  /**
   * The tokens among these that `verify` would still accept, asked together (the live
   * streams' periodic re-check). A token the authority cannot answer for counts as valid.
   */
  stillValid(accessTokens: string[]): Promise<Set<string>>;
  close(): Promise<void>;
}
