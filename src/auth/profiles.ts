import { and, eq, ne, sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { users } from '../db/schema.js';
import type { AuthUser } from './provider.js';

/**
 * Keeps the users directory (memberships by email) in step with the auth provider's users.
 * The provider's emails are unique, so a row that holds this email under another id is
 * stale: that user was deleted (or moved to another email) and someone signed up again
 * with it. The old row keeps its id and data but gives the email up, so the new account
 * signs in and inherits nothing.
 */
export async function upsertProfile(db: Db, user: AuthUser): Promise<void> {
  const email = user.email.toLowerCase();
  await db.transaction(async (tx) => {
    await tx
      .update(users)
      .set({ email: sql`${users.id}::text || '@replaced.invalid'` })
      .where(and(eq(users.email, email), ne(users.id, user.id)));
    await tx
      .insert(users)
      .values({ id: user.id, email })
      // Only a changed email is written, so a sign-in does not rewrite the row every time.
      .onConflictDoUpdate({ target: users.id, set: { email: sql`excluded.email` }, setWhere: sql`${users.email} <> excluded.email` });
  });
}
