import { createSecretKey, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signCapability, verifyCapability } from '../../src/artifacts/signed-urls.js';

// Which generation ids a capability token may carry: ids as the database writes them
// (lower-case hex, any version digit), nothing else, whatever its signature.

const key = createSecretKey(randomBytes(32));
const expiresAt = new Date(Date.UTC(2100, 0, 1));
const sign = (generationId: string) => signCapability(key, { kind: 'preview', generationId, expiresAt });

describe('verifyCapability', () => {
  it.each(['0190f5a2-7c3b-7d4e-8f5a-1b2c3d4e5f60', '4e1b7a2c-9d3f-4a5b-b6c7-d8e9f0a1b2c3', '00000000-0000-0000-0000-000000000000'])(
    'accepts a token for %s',
    (generationId) => {
      expect(verifyCapability(key, 'preview', sign(generationId))).toEqual({ ok: true, capability: { kind: 'preview', generationId, expiresAt } });
    },
  );

  it.each([
    ['an upper-case id', '4E1B7A2C-9D3F-4A5B-B6C7-D8E9F0A1B2C3'],
    ['hyphens out of place', '4e1b7a2c9-d3f-4a5b-b6c7-d8e9f0a1b2c3'],
    ['no hyphens, 36 digits', '4e1b7a2c9d3f4a5bb6c7d8e9f0a1b2c3d4e5'],
  ])('calls a token malformed for %s, signed or not', (_, generationId) => {
    expect(verifyCapability(key, 'preview', sign(generationId))).toEqual({ ok: false, reason: 'malformed' });
  });
});
