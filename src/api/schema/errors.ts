import {
  AppError,
  AuthError,
  BudgetExceededError,
  type FieldError,
  ForbiddenError,
  InvalidStateError,
  NotFoundError,
  RateLimitedError,
  ValidationError,
} from '../../errors.js';
import { builder } from '../builder.js';

// Expected failures as union members that implement `Error` (STYLE 10).
export const ErrorInterface = builder.interfaceRef<AppError>('Error').implement({
  fields: (t) => ({ message: t.exposeString('message') }),
});

const FieldErrorRef = builder.objectRef<FieldError>('FieldError').implement({
  description: 'One invalid input field: its path inside the input and what is wrong with it.',
  fields: (t) => ({
    path: t.exposeStringList('path'),
    message: t.exposeString('message'),
  }),
});

builder.objectType(ValidationError, {
  name: 'ValidationError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ fieldErrors: t.field({ type: [FieldErrorRef], resolve: (e) => e.fieldErrors }) }),
});

builder.objectType(BudgetExceededError, {
  name: 'BudgetExceededError',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    limit: t.exposeInt('limit', { description: "The project's monthly token limit." }),
    used: t.exposeInt('used', { description: 'Tokens spent this month (what Project.usage counts).' }),
    reserved: t.exposeInt('reserved', {
      description: "Tokens held by generations still queued or running: each holds an estimate until it ends and its usage replaces it. A start is refused when used and reserved leave less of the limit than its prompt takes, or none.",
    }),
  }),
});

builder.objectType(RateLimitedError, {
  name: 'RateLimitedError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ retryAfterSeconds: t.exposeInt('retryAfterSeconds') }),
});

for (const [errorClass, name] of [
  [NotFoundError, 'NotFoundError'],
  [ForbiddenError, 'ForbiddenError'],
  [AuthError, 'AuthError'],
  [InvalidStateError, 'InvalidStateError'],
] as const) {
  builder.objectType(errorClass, { name, interfaces: [ErrorInterface] as const, fields: () => ({}) });
}
