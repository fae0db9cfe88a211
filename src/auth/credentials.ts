import { z } from 'zod';
import { AuthError, type FieldError, ValidationError } from '../errors.js';

// Rules and messages both providers share, so a user sees the same answers whichever runs.

export const INVALID_CREDENTIALS = 'Invalid email or password.';
export const EMAIL_TAKEN = 'An account with this email already exists';
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 256;
const MAX_EMAIL_LENGTH = 254;
export const MALFORMED_PASSWORD = 'The password contains an invalid character (an unpaired UTF-16 surrogate).';

const emailSchema = z
  .string()
  .max(MAX_EMAIL_LENGTH, `The email address is too long (${MAX_EMAIL_LENGTH} characters at most).`)
  .pipe(z.email('Enter a valid email address.'));
const passwordSchema = z
  .string()
  .min(MIN_PASSWORD_LENGTH, `The password must be at least ${MIN_PASSWORD_LENGTH} characters.`)
  .max(MAX_PASSWORD_LENGTH, `The password must be at most ${MAX_PASSWORD_LENGTH} characters.`)
  .refine(isWellFormed, MALFORMED_PASSWORD);

/**
 * String#isWellFormed (ES2024, beyond this project's ES2023 typings): no lone surrogate, the
 * only code point `\p{Surrogate}` matches in u mode (a pair is one astral code point). UTF-8
 * encoding turns every lone surrogate into U+FFFD before the KDF (and GoTrue's JSON decoding
 * does the same), so such passwords would collide: 'a\uD800' and 'a\uDC00' hash alike.
 */
function isWellFormed(value: string): boolean {
  return !/\p{Surrogate}/u.test(value);
}

/** Emails compare case-insensitively everywhere (the users table stores them lowercased). */
export function normaliseEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** The normalised email of a valid sign-up; every problem at once as a ValidationError. */
export function validateSignUp(email: string, password: string): string {
  const normalised = normaliseEmail(email);
  const fieldErrors: FieldError[] = [];
  const emailResult = emailSchema.safeParse(normalised);
  if (!emailResult.success) fieldErrors.push({ path: ['email'], message: firstMessage(emailResult.error) });
  const passwordResult = passwordSchema.safeParse(password);
  if (!passwordResult.success) fieldErrors.push({ path: ['password'], message: firstMessage(passwordResult.error) });
  if (fieldErrors.length > 0) throw new ValidationError(fieldErrors);
  return normalised;
}

/**
 * Sign-in's one check before credentials are looked up: a password that is not well-formed
 * is refused as sign-up refuses it, never compared (its hash would match other passwords').
 * Lengths are not checked here, so accounts made under older rules keep signing in.
 */
export function validateSignInPassword(password: string): void {
  if (!isWellFormed(password)) throw new ValidationError([{ path: ['password'], message: MALFORMED_PASSWORD }]);
}

export function emailTakenError(): ValidationError {
  return new ValidationError([{ path: ['email'], message: EMAIL_TAKEN }]);
}

export function invalidCredentialsError(): AuthError {
  return new AuthError(INVALID_CREDENTIALS);
}

function firstMessage(error: z.ZodError): string {
  return error.issues[0]?.message ?? 'Invalid value.';
}
