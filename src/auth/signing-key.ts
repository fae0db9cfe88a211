import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { serverSecrets } from '../db/schema.js';
import { serviceScope } from '../db/scope.js';

const SECRET_NAME = 'local_jwt_secret';

/**
 * The HMAC key of local access tokens: the configured secret, or one generated once
 * and kept in the database, so every instance on it (and every restart) agrees.
 */
export async function loadSigningKey(db: Db, configuredSecret?: string): Promise<Uint8Array> {
  const secret = configuredSecret ?? (await storedSecret(db));
  return new TextEncoder().encode(secret);
}

async function storedSecret(db: Db): Promise<string> {
  return serviceScope(db).run(async (tx) => {
    // Instances starting together each offer a secret; the first insert wins and all read it back.
    await tx
      .insert(serverSecrets)
      .values({ name: SECRET_NAME, value: randomBytes(48).toString('base64url') })
      .onConflictDoNothing({ target: serverSecrets.name });
    const [row] = await tx.select({ value: serverSecrets.value }).from(serverSecrets).where(eq(serverSecrets.name, SECRET_NAME));
    if (!row) throw new Error('server_secrets lost the local signing key just after writing it');
    return row.value;
  });
}
