import { sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { users } from '../db/schema.js';
import type { AuthUser } from './provider.js';

/** Keeps the users directory (memberships by email) in step with the auth provider's users. */
export async function upsertProfile(db: Db, user: AuthUser): Promise<void> {
  await db
    .insert(users)
    .values({ id: user.id, email: user.email.toLowerCase() })
    // Only a changed email is written, so a sign-in does not rewrite the row every time.
    .onConflictDoUpdate({ target: users.id, set: { email: sql`excluded.email` }, setWhere: sql`${users.email} <> excluded.email` });
}
