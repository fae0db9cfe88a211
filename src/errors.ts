import type { generationErrorCodes } from './db/schema.js';

type GenerationErrorCode = (typeof generationErrorCodes)[number];

// Expected failures: use-cases throw these, the API returns them as members of a
// mutation's result union (DESIGN "API contract"). Anything else is unexpected and masked.

export abstract class AppError extends Error {
  abstract readonly kind: string;
}

export interface FieldError {
  path: string[];
  message: string;
}

export class ValidationError extends AppError {
  readonly kind = 'ValidationError';
  constructor(readonly fieldErrors: FieldError[], message = 'The input is not valid.') {
    super(message);
  }
}

export class NotFoundError extends AppError {
  readonly kind = 'NotFoundError';
  constructor(message = 'Not found.') {
    super(message);
  }
}

export class ForbiddenError extends AppError {
  readonly kind = 'ForbiddenError';
  constructor(message = 'You are not allowed to do that.') {
    super(message);
  }
}

export class AuthError extends AppError {
  readonly kind = 'AuthError';
  constructor(message = 'Not signed in, or the session has ended.') {
    super(message);
  }
}

export class InvalidStateError extends AppError {
  readonly kind = 'InvalidStateError';
}

/** A project's tokens of the month: spent by its generations, and held by those still queued or running. */
export interface MonthTokens {
  spent: number;
  reserved: number;
}

export class BudgetExceededError extends AppError {
  readonly kind = 'BudgetExceededError';
  /** Tokens spent this month. */
  readonly used: number;
  /** Tokens held by generations still queued or running, until their usage replaces them. */
  readonly reserved: number;
  /** `needed`: the least a start's prompt takes, when what is left falls short of it rather than being gone. */
  constructor(readonly limit: number, { spent, reserved }: MonthTokens, needed = 1) {
    const left = limit - spent - reserved;
    const held = reserved > 0 ? ` and ${reserved} held by generations still queued or running` : '';
    super(
      left > 0
        ? `The project's monthly token budget (${limit} tokens) has ${left} left this month (${spent} spent${held}), fewer than a generation's prompt takes here (about ${needed}).`
        : reserved > 0
          ? `The project's monthly token budget (${limit} tokens) is taken: ${spent} spent this month${held}. Try again when they end.`
          : `The project's monthly token budget is used up (${spent} of ${limit} tokens spent this month).`,
    );
    this.used = spent;
    this.reserved = reserved;
  }
}

export class RateLimitedError extends AppError {
  readonly kind = 'RateLimitedError';
  constructor(readonly retryAfterSeconds: number, message = 'Too many requests; try again later.') {
    super(message);
  }
}

/**
 * A failure that ends a generation run as FAILED with `code` and a message its owner can
 * act on. The pipeline records `code` as it is; anything that is not a RunError is masked.
 */
export abstract class RunError extends Error {
  abstract readonly code: GenerationErrorCode;
}
