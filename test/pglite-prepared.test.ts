import { PGlite, types } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PreparedPglite } from '../src/db/pglite-prepared.js';

// The embedded database's statements are prepared once (src/db/pglite-prepared.ts): what
// a query returns, how it fails and what a transaction sees must be exactly what PGlite's
// own `query` gives, whatever the statement was prepared against before.

let pg: PGlite;
let prepared: PreparedPglite;

beforeAll(async () => {
  pg = new PGlite();
  prepared = new PreparedPglite(pg);
  await pg.exec(`
    create table things (
      id uuid primary key default gen_random_uuid(), n int not null unique, big bigint, price numeric(10, 2),
      ok boolean, name text, tags text[], counts int[], doc jsonb, raw bytea, at timestamptz, day date
    )`);
});
afterAll(() => pg.close());

// Drizzle's options: timestamps and dates stay the strings the server sent.
const drizzleLike = { rowMode: 'array' as const, parsers: { [types.TIMESTAMPTZ]: (value: string) => value, [types.DATE]: (value: string) => value } };

describe('PGlite with prepared statements', () => {
  it('writes and reads every common type as PGlite query does, in either row mode', async () => {
    const insert = 'insert into things (n, big, price, ok, name, tags, counts, doc, raw, at, day) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning id, n';
    const row = (n: number) => [n, 9_007_199_254_740_993n, '12.50', n % 2 === 0, `it's "${n}"`, ['a', 'b,c', 'd"e'], [1, 2, 3], { nested: { n }, list: [1, 'x'] }, new Uint8Array([0, 1, 255]), new Date(Date.UTC(2026, 11, 4, 10, 30, n)), '2026-12-04'];
    const first = await prepared.query<{ id: string; n: number }>(insert, row(1));
    const second = await prepared.query<{ id: string; n: number }>(insert, row(2));
    expect(first.rows[0]!.n).toBe(1);
    expect(second.rows[0]!.n).toBe(2);
    expect(second.affectedRows).toBe(1);
    await prepared.query(insert, [3, null, null, null, null, null, null, null, null, null, null]);

    const select = 'select * from things where n = any($1) order by n';
    for (const options of [undefined, drizzleLike]) {
      const ours = await prepared.query(select, [[1, 2, 3]], options);
      const theirs = await pg.query(select, [[1, 2, 3]], options);
      expect(ours).toEqual(theirs);
      expect(ours.rows).toHaveLength(3);
    }
    const [one] = (await prepared.query<Record<string, unknown>>(select, [[1]])).rows;
    expect(one).toMatchObject({ n: 1, big: 9_007_199_254_740_993n, ok: false, name: `it's "1"`, tags: ['a', 'b,c', 'd"e'], counts: [1, 2, 3], doc: { nested: { n: 1 }, list: [1, 'x'] } });
    expect(one!.raw).toEqual(new Uint8Array([0, 1, 255]));
    expect((one!.at as Date).toISOString()).toBe('2026-12-04T10:30:01.000Z');
  });

  it('answers each run with its own parameters, and an empty result with its fields', async () => {
    const text = 'select name from things where n = $1';
    expect((await prepared.query(text, [1])).rows).toEqual([{ name: `it's "1"` }]);
    expect((await prepared.query(text, [2])).rows).toEqual([{ name: `it's "2"` }]);
    const none = await prepared.query(text, [999]);
    expect(none.rows).toEqual([]);
    expect(none.fields.map((field) => field.name)).toEqual(['name']);
    const update = 'update things set name = $1 where n > $2 returning n';
    expect(await prepared.query(update, ['renamed', 100])).toEqual(await pg.query(update, ['renamed', 100]));
    const both = await prepared.query(update, ['same', 1]);
    expect(both).toEqual(await pg.query(update, ['same', 1]));
    expect(both).toMatchObject({ affectedRows: 2, rowCount: 2, command: 'UPDATE' });
    await prepared.query('update things set name = $1 where n = $2', [`it's "2"`, 2]);
    await prepared.query('update things set name = $1 where n = $2', [null, 3]);
  });

  it('fails with PostgreSQL’s error and the statement, changes nothing, and goes on working', async () => {
    const insert = 'insert into things (n, name) values ($1, $2)';
    const duplicate = await prepared.query(insert, [1, 'again']).catch((error: unknown) => error);
    expect(duplicate).toMatchObject({ code: '23505', query: insert, params: [1, 'again'] });
    expect((await prepared.query('select count(*)::int as count from things where n = 1')).rows).toEqual([{ count: 1 }]);

    const typo = await prepared.query('select nme from things where n = $1', [1]).catch((error: unknown) => error);
    expect(typo).toMatchObject({ code: '42703' });
    const badValue = await prepared.query('select name from things where n = $1', ['not a number']).catch((error: unknown) => error);
    expect(badValue).toMatchObject({ code: '22P02' });
    expect((await prepared.query('select name from things where n = $1', [2])).rows).toEqual([{ name: `it's "2"` }]);
  });

  it('keeps transactions whole: a rollback undoes, and a query alone waits for the open transaction', async () => {
    const insert = 'insert into things (n, name) values ($1, $2)';
    const rolledBack = await prepared
      .transaction(async (tx) => {
        await tx.query(insert, [10, 'ten']);
        await tx.query(insert, [1, 'duplicate']);
      })
      .catch((error: unknown) => error);
    expect(rolledBack).toMatchObject({ code: '23505' });
    expect((await prepared.query('select n from things where n = $1', [10])).rows).toEqual([]);

    // A query sent while a transaction is open runs after it, so it never sees what the transaction undoes.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let inserted!: () => void;
    const insertedYet = new Promise<void>((resolve) => (inserted = resolve));
    const open = prepared.transaction(async (tx) => {
      await tx.query(insert, [11, 'eleven']);
      inserted();
      await held;
      throw new Error('changed its mind');
    });
    await insertedYet;
    const alone = prepared.query<{ name: string }>('select name from things where n = $1', [11]);
    release();
    await expect(open).rejects.toThrow('changed its mind');
    expect((await alone).rows).toEqual([]);
  });

  it('answers with a table’s new shape after the table changed under a prepared statement', async () => {
    const text = 'select * from things where n = $1';
    expect(Object.keys((await prepared.query<Record<string, unknown>>(text, [2])).rows[0]!)).not.toContain('extra');
    await pg.exec(`alter table things add column extra text default 'new'`);
    expect((await prepared.query<Record<string, unknown>>(text, [2])).rows[0]).toMatchObject({ n: 2, extra: 'new' });

    // Inside a transaction the changed table aborts it, as a plain query's error would; the next try works.
    await pg.exec('alter table things drop column extra');
    const inside = await prepared.transaction((tx) => tx.query(text, [2])).catch((error: unknown) => error);
    expect(inside).toMatchObject({ code: '0A000' });
    expect(Object.keys((await prepared.query<Record<string, unknown>>(text, [2])).rows[0]!)).not.toContain('extra');
  });

  it('stays right past the number of statements it keeps', async () => {
    for (let i = 0; i < 1_050; i++) {
      const { rows } = await prepared.query<{ value: number }>(`select $1::int + ${i} as value`, [1]);
      expect(rows).toEqual([{ value: 1 + i }]);
    }
    expect((await prepared.query('select name from things where n = $1', [2])).rows).toEqual([{ name: `it's "2"` }]);
  });

  it('takes PGlite’s own path for what it does not prepare', async () => {
    await prepared.query('create table other (id int)');
    await prepared.transaction((tx) => tx.query('insert into other values (1)').then(() => tx.query('alter table other add column name text')));
    expect((await prepared.query('select * from other')).rows).toEqual([{ id: 1, name: null }]);
  });
});
