import { type AuthError as GoTrueError, isAuthApiError, isAuthError, isAuthSessionMissingError } from '@supabase/supabase-js';
import { AppError, AuthError, RateLimitedError, ValidationError } from '../errors.js';
import { emailTakenError, invalidCredentialsError } from './credentials.js';

// GoTrue's answers as Kiln's expected errors. Codes: supabase/auth internal/api/apierrors.

export const CONFIRM_EMAIL = 'Check your inbox and confirm your email address, then sign in.';
// GoTrue's 429 carries no Retry-After that supabase-js passes on; its limits are per minute or hour.
const RATE_LIMIT_RETRY_SECONDS = 60;

const endedSession = new Set([
  'refresh_token_not_found',
  'refresh_token_already_used',
  'session_not_found',
  'session_expired',
  'user_not_found',
  'user_banned',
  'bad_jwt',
]);

/** An AppError for the failures a user can cause; anything else is returned as is (unexpected, masked). */
export function fromGoTrueError(error: GoTrueError | Error): Error {
  if (!isAuthError(error)) return error;
  if (isAuthSessionMissingError(error)) return new AuthError();
  // GoTrue's code is on AuthApiError and on the subclasses auth-js makes of some (AuthWeakPasswordError).
  const code = error.code ?? '';
  if (error.status === 429 || code.startsWith('over_')) return new RateLimitedError(RATE_LIMIT_RETRY_SECONDS);
  if (code === 'invalid_credentials') return invalidCredentialsError();
  if (code === 'email_not_confirmed') return new AuthError(CONFIRM_EMAIL);
  if (code === 'user_already_exists' || code === 'email_exists') return emailTakenError();
  if (code === 'weak_password') return fieldError('password', error.message);
  if (code === 'email_address_invalid') return fieldError('email', error.message);
  if (code === 'validation_failed') return fieldError(/password/i.test(error.message) ? 'password' : 'email', error.message);
  if (code === 'signup_disabled') return new AuthError('Sign-up is disabled.');
  if (endedSession.has(code)) return new AuthError();
  return error;
}

/** Refreshing with a token GoTrue will not take is the client's problem, whatever the reason. */
export function fromRefreshError(error: GoTrueError | Error): Error {
  const mapped = fromGoTrueError(error);
  if (mapped instanceof AppError) return mapped;
  return isAuthApiError(error) && error.status >= 400 && error.status < 500 ? new AuthError() : mapped;
}

function fieldError(field: 'email' | 'password', message: string): ValidationError {
  return new ValidationError([{ path: [field], message }]);
}
