import { z } from 'zod';
import { AuthError, type FieldError, ValidationError } from '../errors.js';

// Rules and messages both providers share, so a user sees the same answers whichever runs.

export const INVALID_CREDENTIALS = 'Invalid email or password.';
export const EMAIL_TAKEN = 'An account with this email already exists';
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 256;
const MAX_EMAIL_LENGTH = 254;

const emailSchema = z
  .string()
  .max(MAX_EMAIL_LENGTH, `The email address is too long (${MAX_EMAIL_LENGTH} characters at most).`)
  .pipe(z.email('Enter a valid email address.'));
const passwordSchema = z
  .string()
  .min(MIN_PASSWORD_LENGTH, `The password must be at least ${MIN_PASSWORD_LENGTH} characters.`)
  .max(MAX_PASSWORD_LENGTH, `The password must be at most ${MAX_PASSWORD_LENGTH} characters.`);

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

export function emailTakenError(): ValidationError {
  return new ValidationError([{ path: ['email'], message: EMAIL_TAKEN }]);
}

export function invalidCredentialsError(): AuthError {
  return new AuthError(INVALID_CREDENTIALS);
}

function firstMessage(error: z.ZodError): string {
  return error.issues[0]?.message ?? 'Invalid value.';
}
