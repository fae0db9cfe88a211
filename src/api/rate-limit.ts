import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { postgresRateLimitStore } from '../db/rate-limit-store.js';
import { RateLimitedError } from '../errors.js';
import type { RefusalLimit } from '../observability/metrics.js';

// Fixed-window rate limits: sign-in and sign-up per client address (spraying) and per
// email from one address (guessing one account; keyed on both, so an attacker who
// hammers a victim's email cannot lock the victim out from anywhere else), starting
// generations (builds run, a paid model answers) and adding project members (probing
// emails for accounts) per user and per client address (accounts are free, addresses are not),
// and refreshing sessions per client address (each refresh is a call to the auth provider,
// which on Supabase has its own per-address limits). Embedded Kiln
// counts in memory (one process); on PostgreSQL every instance counts in one table,
// so a limit holds however many API processes sit behind the load balancer.

export interface RateRule {
  limit: number;
  windowSeconds: number;
}

export interface RateLimitStore {
  /** Counts one hit on `key` in the current window of `rule`; returns the count so far and the seconds until the window ends. */
  hit(key: string, windowSeconds: number): Promise<{ count: number; resetInSeconds: number }>;
  /** Takes one hit back from `key`'s current window (none once that window has ended). */
  unhit(key: string, windowSeconds: number): Promise<void>;
}

export interface RateLimits {
  /**
   * Before signIn and signUp; resolves with what to call when the attempt is then turned away
   * before its password is looked at (too many hashing at once): it gives the hits back, as the
   * attempt was no guess, and counts the refusal (sign_in_hashing).
   */
  authAttempt(clientIp: string, email: string): Promise<() => Promise<void>>;
  /**
   * Before startGeneration, retryGeneration and restoreGeneration; resolves with what gives the
   * hit back when the start is then refused for another reason (a busy session, a budget): the
   * limit counts generations started, and a client that asks again is not locked out for it.
   */
  generationStart(userId: string, clientIp: string): Promise<() => Promise<void>>;
  /** Before addProjectMember. */
  memberAdd(userId: string, clientIp: string): Promise<void>;
  /** Before refreshSession. */
  refresh(clientIp: string): Promise<void>;
}

/** A limit's rule (null: off), the counter it hits, and its name in kiln_refusals_total. */
type Counted = [RateRule | null, string, RefusalLimit];

/** `onRefused` hears of every request a limit turns away (the metrics count them). */
export function createRateLimits(rules: Config['rateLimits'], store: RateLimitStore, onRefused: (limit: RefusalLimit) => void = () => {}): RateLimits {
  const check = async ([rule, key, limit]: Counted, message: string) => {
    if (!rule) return;
    const { count, resetInSeconds } = await store.hit(key, rule.windowSeconds);
    if (count <= rule.limit) return;
    onRefused(limit);
    throw new RateLimitedError(Math.max(1, Math.ceil(resetInSeconds)), message);
  };
  const giveBack = async (hits: Counted[]) => {
    for (const [rule, key] of hits) if (rule) await store.unhit(key, rule.windowSeconds);
  };
  return {
    authAttempt: async (clientIp, email) => {
      const message = 'Too many sign-in attempts; wait a while and try again.';
      const client = addressBlock(clientIp);
      const counted: Counted[] = [
        [rules.authPerIp, `auth:ip:${client}`, 'auth_per_ip'],
        [rules.authPerEmail, `auth:email:${email.trim().toLowerCase()}:${client}`, 'auth_per_email'],
      ];
      for (const limit of counted) await check(limit, message);
      return () => {
        onRefused('sign_in_hashing');
        return giveBack(counted);
      };
    },
    generationStart: async (userId, clientIp) => {
      const message = 'You started too many generations recently; wait a while and try again.';
      const counted: Counted[] = [
        [rules.generationsPerUser, `generations:user:${userId}`, 'generations_per_user'],
        [rules.generationsPerIp, `generations:ip:${addressBlock(clientIp)}`, 'generations_per_ip'],
      ];
      for (const [index, limit] of counted.entries()) {
        // Refused by the address's limit: the user's own count is given back (the address's keeps counting attempts).
        await check(limit, message).catch(async (error: unknown) => {
          await giveBack(counted.slice(0, index));
          throw error;
        });
      }
      return () => giveBack(counted);
    },
    memberAdd: async (userId, clientIp) => {
      const message = 'You added too many members recently; wait a while and try again.';
      await check([rules.membersPerUser, `members:user:${userId}`, 'members_per_user'], message);
      await check([rules.membersPerIp, `members:ip:${addressBlock(clientIp)}`, 'members_per_ip'], message);
    },
    refresh: async (clientIp) => {
      await check([rules.refreshPerIp, `refresh:ip:${addressBlock(clientIp)}`, 'refresh_per_ip'], 'Too many session refreshes; wait a while and try again.');
    },
  };
}

/** The store for a database: shared through PostgreSQL, in memory for embedded PGlite (a single process). */
export function rateLimitStoreFor(database: Database): RateLimitStore {
  return database.kind === 'postgres' ? postgresRateLimitStore(database.db) : memoryRateLimitStore();
}

/** Windows are aligned to multiples of their length since the epoch. */
export function memoryRateLimitStore(now: () => number = Date.now): RateLimitStore {
  const windows = new Map<string, { start: number; count: number; windowMs: number }>();
  let sweepAt = 0;
  return {
    hit: async (key, windowSeconds) => {
      const windowMs = windowSeconds * 1000;
      const time = now();
      if (time >= sweepAt) {
        // Forget finished windows now and then, so the map holds only live counters.
        for (const [k, w] of windows) if (w.start + w.windowMs <= time) windows.delete(k);
        sweepAt = time + 60_000;
      }
      const start = Math.floor(time / windowMs) * windowMs;
      const current = windows.get(key);
      const window = current && current.start === start ? current : { start, count: 0, windowMs };
      window.count++;
      windows.set(key, window);
      return { count: window.count, resetInSeconds: (start + windowMs - time) / 1000 };
    },
    unhit: async (key, windowSeconds) => {
      const window = windows.get(key);
      const windowMs = windowSeconds * 1000;
      if (window && window.start === Math.floor(now() / windowMs) * windowMs && window.count > 0) window.count--;
    },
  };
}

/**
 * The client's address: the socket's peer, unless `trustedHops` reverse proxies are
 * declared (TRUST_PROXY), in which case the address the outermost trusted proxy saw,
 * read from the right of X-Forwarded-For (the left is whatever the client wrote).
 */
export function clientAddress(req: IncomingMessage | undefined, trustedHops: number): string {
  const peer = normalise(req?.socket?.remoteAddress) ?? 'unknown';
  if (!req || trustedHops <= 0) return peer;
  const header = req.headers['x-forwarded-for'];
  const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',').map((part) => part.trim()).filter(Boolean);
  const chain = [...forwarded, peer];
  return normalise(chain[Math.max(0, chain.length - 1 - trustedHops)]) ?? peer;
}

/**
 * What a per-address limit counts: an IPv4 address, or the /64 of an IPv6 one. A host or a
 * home connection is given a whole /64, and could take a new address for every attempt.
 */
export function addressBlock(address: string): string {
  if (isIP(address) !== 6) return address;
  const [head = '', tail] = address.split('%')[0]!.split('::');
  const groups = head ? head.split(':') : [];
  // `::` stands for the zero groups up to eight; a dotted IPv4 tail is two of them.
  if (tail !== undefined) {
    const rest = tail ? tail.split(':') : [];
    const restGroups = rest.reduce((n, part) => n + (part.includes('.') ? 2 : 1), 0);
    groups.push(...Array<string>(8 - groups.length - restGroups).fill('0'), ...rest);
  }
  return `${groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/** An address as the socket or a proxy gives it, without a port, lower-cased; undefined for anything else. */
function normalise(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const host = withoutPort(address);
  const plain = host.startsWith('::ffff:') && isIP(host.slice(7)) === 4 ? host.slice(7) : host;
  return isIP(plain) ? plain.toLowerCase() : undefined;
}

/**
 * Some proxies (Azure Application Gateway, Front Door) write the client's port too:
 * `203.0.113.7:51234` is `203.0.113.7`, `[2001:db8::1]:443` (or `[2001:db8::1]`) is
 * `2001:db8::1`. Anything else is returned as it is, for normalise to judge.
 */
function withoutPort(address: string): string {
  const v4 = /^([\d.]+):(\d{1,5})$/.exec(address);
  if (v4 && Number(v4[2]) <= 65535 && isIP(v4[1]!) === 4) return v4[1]!;
  const v6 = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(address);
  if (v6 && Number(v6[2] ?? 0) <= 65535 && isIP(v6[1]!) === 6) return v6[1]!;
  return address;
}
