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
  const secret = configuredSecret ?? (await serverSecret(db, SECRET_NAME));
  return new TextEncoder().encode(secret);
}

/** A random secret generated once per database under `name` (server_secrets), the same for every instance. */
export async function serverSecret(db: Db, name: string): Promise<string> {
  return serviceScope(db).run(async (tx) => {
    // Instances starting together each offer a secret; the first insert wins and all read it back.
    await tx
      .insert(serverSecrets)
      .values({ name, value: randomBytes(48).toString('base64url') })
      .onConflictDoNothing({ target: serverSecrets.name });
    const [row] = await tx.select({ value: serverSecrets.value }).from(serverSecrets).where(eq(serverSecrets.name, name));
    if (!row) throw new Error(`server_secrets lost ${name} just after writing it`);
    return row.value;
  });
}
