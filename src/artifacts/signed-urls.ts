import { type KeyObject, createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/client.js';
import { serverSecret } from '../auth/signing-key.js';
import { UUID } from '../generations/store.js';

// Capability URLs for previews and archives: an iframe or a download link cannot send
// a bearer token, so the URL itself carries the right to read one generation's output
// of one kind until it expires. The key is generated once and kept in the database,
// so every instance verifies what any instance signed.

export type CapabilityKind = 'preview' | 'zip' | 'tar.gz';

export interface Capability {
  kind: CapabilityKind;
  generationId: string;
  expiresAt: Date;
}

const KEY_NAME = 'signed_url_key';
// Lower-case hex only, as ids are signed; UUID then checks the id's shape.
const TOKEN = /^([0-9a-f-]{36})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43})$/;

export async function loadUrlKey(db: Db): Promise<KeyObject> {
  // One KeyObject, made once: HMAC with a raw Buffer key would import it on every request.
  return createSecretKey(Buffer.from(await serverSecret(db, KEY_NAME), 'base64url'));
}

/** `<generation uuid>.<expiry, unix seconds>.<HMAC-SHA256 over kind, generation and expiry>`: one URL path segment. */
export function signCapability(key: KeyObject, capability: Capability): string {
  const expires = Math.floor(capability.expiresAt.getTime() / 1000);
  return `${capability.generationId}.${expires}.${mac(key, capability.kind, capability.generationId, expires)}`;
}

export type Verified = { ok: true; capability: Capability } | { ok: false; reason: 'malformed' | 'forged' | 'expired' };

/** Checks a token for one kind: any other kind, a changed byte or a past expiry fails. */
export function verifyCapability(key: KeyObject, kind: CapabilityKind, token: string, now = Date.now()): Verified {
  const match = TOKEN.exec(token);
  if (!match || !UUID.test(match[1]!)) return { ok: false, reason: 'malformed' };
  const [, generationId, expiresText, signature] = match as unknown as [string, string, string, string];
  const expires = Number(expiresText);
  const expected = Buffer.from(mac(key, kind, generationId, expires));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'forged' };
  if (expires * 1000 <= now) return { ok: false, reason: 'expired' };
  return { ok: true, capability: { kind, generationId, expiresAt: new Date(expires * 1000) } };
}

function mac(key: KeyObject, kind: CapabilityKind, generationId: string, expires: number): string {
  return createHmac('sha256', key).update(`kiln-output\n${kind}\n${generationId}\n${expires}`).digest('base64url');
}
