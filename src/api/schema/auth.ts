import { z } from 'zod';
import type { AuthSession } from '../../auth/provider.js';
import { HashingBusyError } from '../../auth/kdf-limiter.js';
import { builder } from '../builder.js';
import { UserRef } from './users.js';

const AuthSessionRef = builder.objectRef<AuthSession>('AuthSession').implement({
  description: 'Tokens of a signed-in session. Send accessToken as `Authorization: Bearer …`; trade refreshToken for new tokens before expiresAt.',
  fields: (t) => ({
    accessToken: t.exposeString('accessToken'),
    refreshToken: t.exposeString('refreshToken'),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
    user: t.field({ type: UserRef, resolve: (session) => session.user }),
  }),
});

const SignOutScopeEnum = builder.enumType('SignOutScope', {
  values: {
    LOCAL: { description: 'This session only (the default).' },
    GLOBAL: { description: "All of the user's sessions." },
    OTHERS: { description: 'All sessions but this one.' },
  } as const,
});

// Bounded on sign-in as on sign-up: the email is part of a rate-limit counter's key.
const credentials = { email: z.string().max(254, 'Email is too long'), password: z.string().max(256, 'Password is too long') };
const SignUpInput = builder.inputType('SignUpInput', {
  fields: (t) => ({ email: t.string({ required: true, validate: credentials.email }), password: t.string({ required: true, validate: credentials.password }) }),
});
const SignInInput = builder.inputType('SignInInput', {
  fields: (t) => ({ email: t.string({ required: true, validate: credentials.email }), password: t.string({ required: true, validate: credentials.password }) }),
});
const RefreshSessionInput = builder.inputType('RefreshSessionInput', {
  fields: (t) => ({ refreshToken: t.string({ required: true }) }),
});

builder.queryField('viewer', (t) =>
  t.field({
    type: UserRef,
    nullable: true,
    description: 'The signed-in user, or null without a valid access token.',
    // The users row, not the token's claims: a token keeps the email it was issued with until it
    // expires, also after the user changed it (and someone else took the old one).
    resolve: (_root, _args, ctx) => ctx.viewer?.id ?? null,
  }),
);

builder.mutationFields((t) => ({
  signUp: t.field({
    type: AuthSessionRef,
    errors: {},
    args: { input: t.arg({ type: SignUpInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const turnedAway = await ctx.useCases.rateLimits.authAttempt(ctx.clientIp, input.email);
      return notCountedWhenBusy(ctx.useCases.sessions.signUp(input.email, input.password, ctx.clientIp), turnedAway);
    },
  }),
  signIn: t.field({
    type: AuthSessionRef,
    errors: {},
    args: { input: t.arg({ type: SignInInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const turnedAway = await ctx.useCases.rateLimits.authAttempt(ctx.clientIp, input.email);
      return notCountedWhenBusy(ctx.useCases.sessions.signIn(input.email, input.password, ctx.clientIp), turnedAway);
    },
  }),
  refreshSession: t.field({
    type: AuthSessionRef,
    errors: {},
    args: { input: t.arg({ type: RefreshSessionInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      await ctx.useCases.rateLimits.refresh(ctx.clientIp);
      return ctx.useCases.sessions.refresh(input.refreshToken, ctx.clientIp);
    },
  }),
  signOut: t.boolean({
    description: 'Ends sessions at once (their access tokens stop working). False when the request had no live session.',
    args: { scope: t.arg({ type: SignOutScopeEnum }) },
    resolve: async (_root, { scope }, ctx) => {
      if (!ctx.viewer) return false;
      await ctx.useCases.sessions.signOut(ctx.viewer.claims, ctx.viewer.accessToken, scope ?? 'LOCAL');
      return true;
    },
  }),
}));

/** An attempt turned away before its password was looked at (too many hashing at once) does not count against the sign-in limits. */
async function notCountedWhenBusy<T>(attempt: Promise<T>, turnedAway: () => Promise<void>): Promise<T> {
  try {
    return await attempt;
  } catch (error) {
    if (error instanceof HashingBusyError) await turnedAway();
    throw error;
  }
}
