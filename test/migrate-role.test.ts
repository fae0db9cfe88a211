import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/client.js';
import { migrateDatabase } from '../src/db/migrate.js';
import { testDatabaseUrl } from './support/db.js';

// A production DATABASE_URL often names its role after the app: postgres://kiln:…@host/kiln.
// PostgreSQL's default search_path starts with "$user", and the migrations create a schema
// called kiln (the RLS helpers), so tables made without a schema name must still land in public.

describe.skipIf(!testDatabaseUrl)('migrations on PostgreSQL', () => {
  it('migrate a new database as a role named kiln, tables in public', async () => {
    const admin = postgres(testDatabaseUrl!, { max: 1, onnotice: () => {} });
    const name = `kiln_role_${randomBytes(4).toString('hex')}`;
    const password = randomBytes(12).toString('hex');
    // Roles belong to the whole cluster: one that was there before is used as it is, and kept.
    const [role] = await admin<{ existed: boolean }[]>`select exists (select 1 from pg_roles where rolname = 'kiln') as existed`;
    const existed = role!.existed;
    try {
      if (!existed) await admin.unsafe(`create role kiln login createrole password '${password}'`);
      await admin.unsafe(`create database ${name} owner kiln`);
      const url = new URL(testDatabaseUrl!);
      url.username = 'kiln';
      if (!existed) url.password = password;
      url.pathname = `/${name}`;
      const database = await openDatabase({ url: url.toString() });
      try {
        await migrateDatabase(database);
        const check = postgres(url.toString(), { max: 1, onnotice: () => {} });
        const rows = await check`select to_regclass('public.users') is not null as users, to_regclass('public.generations') is not null as generations`;
        await check.end();
        expect(rows).toEqual([{ users: true, generations: true }]);
      } finally {
        await database.close();
      }
    } finally {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      if (!existed) await admin.unsafe('drop role if exists kiln');
      await admin.end();
    }
  });
});
