import { PGlite, types } from '@electric-sql/pglite';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { PreparedPglite } from '../src/db/pglite-prepared.js';

// The embedded database's statements are prepared once (src/db/pglite-prepared.ts): what
// a query returns, how it fails and what a transaction sees must be exactly what PGlite's
// own `query` gives, whatever the statement was prepared against before.

let pg: PGlite;
let prepared: PreparedPglite;

beforeAll(async () => {
  pg = new PGlite();
});
afterAll(() => pg.close());

// Every test starts from the same three rows, and a client that has prepared nothing (this
// DDL goes through `exec`, which the client does not see).
beforeEach(async () => {
  prepared = new PreparedPglite(pg);
  await pg.exec(`
    deallocate all;
    drop table if exists things;
    create table things (
      id uuid primary key default gen_random_uuid(), n int not null unique, big bigint, price numeric(10, 2),
      ok boolean, name text, tags text[], counts int[], doc jsonb, raw bytea, at timestamptz, day date
    );
    insert into things (n, name) values (1, 'one'), (2, 'two'), (3, 'three');`);
});

// Drizzle's options: timestamps and dates stay the strings the server sent.
const drizzleLike = { rowMode: 'array' as const, parsers: { [types.TIMESTAMPTZ]: (value: string) => value, [types.DATE]: (value: string) => value } };
const preparedCount = async () => (await pg.query<{ count: number }>('select count(*)::int as count from pg_prepared_statements')).rows[0]!.count;
const failureOf = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error);

describe('PGlite with prepared statements', () => {
  it('writes and reads every common type as PGlite query does, in either row mode', async () => {
    const insert = 'insert into things (n, big, price, ok, name, tags, counts, doc, raw, at, day) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning id, n';
    const row = (n: number) => [n, 9_007_199_254_740_993n, '12.50', n % 2 === 0, `it's "${n}"`, ['a', 'b,c', 'd"e'], [1, 2, 3], { nested: { n }, list: [1, 'x'] }, new Uint8Array([0, 1, 255]), new Date(Date.UTC(2026, 11, 4, 10, 30, n % 60)), '2026-12-04'];
    const first = await prepared.query<{ id: string; n: number }>(insert, row(11));
    const second = await prepared.query<{ id: string; n: number }>(insert, row(12));
    expect(first.rows[0]!.n).toBe(11);
    expect(second).toMatchObject({ affectedRows: 1, rowCount: 1, command: 'INSERT', rows: [{ n: 12 }] });
    await prepared.query(insert, [13, null, null, null, null, null, null, null, null, null, undefined]);

    const select = 'select * from things where n = any($1) order by n';
    for (const options of [undefined, drizzleLike]) {
      const ours = await prepared.query(select, [[11, 12, 13]], options);
      expect(ours).toEqual(await pg.query(select, [[11, 12, 13]], options));
      expect(ours.rows).toHaveLength(3);
    }
    const [one] = (await prepared.query<Record<string, unknown>>(select, [[11]])).rows;
    expect(one).toMatchObject({ n: 11, big: 9_007_199_254_740_993n, ok: false, name: `it's "11"`, tags: ['a', 'b,c', 'd"e'], counts: [1, 2, 3], doc: { nested: { n: 11 }, list: [1, 'x'] } });
    expect(one!.raw).toEqual(new Uint8Array([0, 1, 255]));
    expect((one!.at as Date).toISOString()).toBe('2026-12-04T10:30:11.000Z');
  });

  it('answers each run with its own parameters, and counts what an update changed', async () => {
    const text = 'select name from things where n = $1';
    expect((await prepared.query(text, [1])).rows).toEqual([{ name: 'one' }]);
    expect((await prepared.query(text, [2])).rows).toEqual([{ name: 'two' }]);
    const none = await prepared.query(text, [999]);
    expect(none).toEqual(await pg.query(text, [999]));
    expect(none.fields.map((field) => field.name)).toEqual(['name']);
    const update = 'update things set name = $1 where n > $2 returning n';
    expect(await prepared.query(update, ['renamed', 100])).toEqual(await pg.query(update, ['renamed', 100]));
    const both = await prepared.query(update, ['same', 1]);
    expect(both).toEqual(await pg.query(update, ['same', 1]));
    expect(both).toMatchObject({ affectedRows: 2, rowCount: 2, command: 'UPDATE' });
  });

  it('uses the caller’s parsers and serialisers where it gives them', async () => {
    const options = { serializers: { [types.INT4]: (value: unknown) => String(Number(value) + 1) }, parsers: { [types.TEXT]: (value: string) => value.toUpperCase() } };
    expect((await prepared.query('select name from things where n = $1', [1], options)).rows).toEqual([{ name: 'TWO' }]);
  });

  it('fails with PostgreSQL’s error and the statement, changes nothing, and goes on working', async () => {
    const insert = 'insert into things (n, name) values ($1, $2)';
    expect(await failureOf(prepared.query(insert, [1, 'again']))).toMatchObject({ code: '23505', query: insert, params: [1, 'again'] });
    expect((await prepared.query('select name from things where n = $1', [1])).rows).toEqual([{ name: 'one' }]);
    expect(await failureOf(prepared.query('select nme from things where n = $1', [1]))).toMatchObject({ code: '42703' });
    expect(await failureOf(prepared.query('select name from things where n = $1', ['not a number']))).toMatchObject({ code: '22P02' });
    expect((await prepared.query('select name from things where n = $1', [2])).rows).toEqual([{ name: 'two' }]);

    // A text that failed to prepare is prepared again once it can be.
    const later = 'select count(*)::int as count from later_table where id > $1';
    expect(await failureOf(prepared.query(later, [0]))).toMatchObject({ code: '42P01' });
    await pg.exec('create table if not exists later_table (id int); insert into later_table values (1);');
    expect((await prepared.query(later, [0])).rows).toEqual([{ count: 1 }]);
  });

  it('keeps transactions whole: a rollback undoes, a closed one refuses, and a query alone waits for the open one', async () => {
    const insert = 'insert into things (n, name) values ($1, $2)';
    const rolledBack = failureOf(
      prepared.transaction(async (tx) => {
        await tx.query(insert, [10, 'ten']);
        await tx.query(insert, [1, 'duplicate']);
      }),
    );
    expect(await rolledBack).toMatchObject({ code: '23505' });
    expect((await prepared.query('select n from things where n = $1', [10])).rows).toEqual([]);
    // Prepared inside the rolled-back transaction, the statement still works.
    await prepared.query(insert, [10, 'ten']);
    expect((await prepared.query('select name from things where n = $1', [10])).rows).toEqual([{ name: 'ten' }]);

    let kept!: { query: (text: string, params?: unknown[]) => Promise<unknown> };
    await prepared.transaction(async (tx) => {
      kept = tx;
      // New texts at once in one transaction: each prepared before it runs.
      const names = await Promise.all([1, 2, 3].map((n) => tx.query(`select name, ${n} as k from things where n = $1`, [n])));
      expect(names.map((result) => (result as { rows: unknown[] }).rows)).toEqual([[{ name: 'one', k: 1 }], [{ name: 'two', k: 2 }], [{ name: 'three', k: 3 }]]);
    });
    await expect(kept.query('select name from things where n = $1', [1])).rejects.toThrow('Transaction is closed');

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

  it('gives each role and each user’s claims their own rows from one prepared plan', async () => {
    await pg.exec(`
      do $$ begin if not exists (select from pg_roles where rolname = 'reader') then create role reader; end if; end $$;
      create table notes (owner text not null, body text not null);
      alter table notes enable row level security;
      create policy own_notes on notes for select to reader using (owner = current_setting('request.owner', true));
      grant select on notes to reader;
      insert into notes values ('ann', 'a1'), ('ann', 'a2'), ('bob', 'b1');
      set plan_cache_mode = force_generic_plan;`);
    try {
      const notes = 'select body from notes where body like $1 order by body';
      const as = (owner: string | null) =>
        prepared.transaction(async (tx) => {
          if (owner) await tx.query("select set_config('request.owner', $1, true), set_config('role', 'reader', true)", [owner]);
          return (await tx.query<{ body: string }>(notes, ['%'])).rows.map((row) => row.body);
        });
      expect(await as('ann')).toEqual(['a1', 'a2']);
      expect(await as('bob')).toEqual(['b1']);
      expect(await as(null)).toEqual(['a1', 'a2', 'b1']);
      expect(await as('ann')).toEqual(['a1', 'a2']);
    } finally {
      await pg.exec('reset plan_cache_mode; drop table notes;');
    }
  });

  it('answers with a table’s new shape and types after the table changed under a prepared statement', async () => {
    const text = 'select * from things where n = $1';
    expect(Object.keys((await prepared.query<Record<string, unknown>>(text, [2])).rows[0]!)).not.toContain('extra');
    await pg.exec(`alter table things add column extra text default 'new'`);
    expect((await prepared.query<Record<string, unknown>>(text, [2])).rows[0]).toMatchObject({ n: 2, extra: 'new' });

    // Retried after the change, a write still happens once.
    const insert = 'insert into things (n, name) values ($1, $2) returning *';
    await prepared.query(insert, [20, 'twenty']);
    await pg.exec(`alter table things add column more text default 'more'`);
    expect((await prepared.query(insert, [21, 'twenty-one'])).rows).toEqual([expect.objectContaining({ n: 21, more: 'more' })]);
    expect((await prepared.query('select count(*)::int as count from things where n = $1', [21])).rows).toEqual([{ count: 1 }]);

    // Inside a transaction the changed table aborts it, as a plain query's error would; the next try works.
    await pg.exec('alter table things drop column extra');
    expect(await failureOf(prepared.transaction((tx) => tx.query(text, [2])))).toMatchObject({ code: '0A000' });
    expect(Object.keys((await prepared.query<Record<string, unknown>>(text, [2])).rows[0]!)).not.toContain('extra');

    // A column's new type, after DDL sent through the client, reaches the parameter too.
    const byName = 'select n from things where name = $1';
    expect((await prepared.query(byName, ['two'])).rows).toEqual([{ n: 2 }]);
    await prepared.query('alter table things alter column name type int using null');
    await prepared.query('update things set name = n');
    expect((await prepared.query(byName, [2])).rows).toEqual([{ n: 2 }]);
  });

  it('forgets what DDL may have changed: sent with a query at once, and undone by a rollback', async () => {
    const byName = 'select n from things where name = $1';
    expect((await prepared.query(byName, ['two'])).rows).toEqual([{ n: 2 }]);
    // The query queued behind the DDL binds the new type.
    const [, after] = await Promise.all([prepared.query('alter table things alter column name type int using n'), prepared.query(byName, [2])]);
    expect(after.rows).toEqual([{ n: 2 }]);

    // Prepared for the new type inside a transaction that is rolled back: the old type is back.
    const undone = prepared.transaction(async (tx) => {
      await tx.query('alter table things alter column name type text');
      await tx.query(byName, ['2']);
      throw new Error('undo');
    });
    await expect(undone).rejects.toThrow('undo');
    expect((await prepared.query(byName, [2])).rows).toEqual([{ n: 2 }]);
    expect(await prepared.query(byName, [2])).toEqual(await pg.query(byName, [2]));
  });

  it('prepares again what the session lost', async () => {
    const text = 'select name from things where n = $1';
    expect((await prepared.query(text, [1])).rows).toEqual([{ name: 'one' }]);
    await pg.exec('deallocate all');
    expect((await prepared.query(text, [1])).rows).toEqual([{ name: 'one' }]);
    // One of them deallocated: none is left behind in the session, each answers.
    const other = 'select name from things where n = $1 and true';
    expect((await prepared.query(other, [3])).rows).toEqual([{ name: 'three' }]);
    const [{ name }] = (await pg.query<{ name: string }>('select name from pg_prepared_statements where statement = $1', [text])).rows as [{ name: string }];
    await pg.exec(`deallocate ${name}`);
    expect((await prepared.query(text, [1])).rows).toEqual([{ name: 'one' }]);
    expect((await prepared.query(other, [3])).rows).toEqual([{ name: 'three' }]);
    expect(await preparedCount()).toBe(2);
    expect((await prepared.query('select name from things where n = $1 and $1 > 0', [2])).rows).toEqual([{ name: 'two' }]);
  });

  it('keeps the most recently used statements, a bounded number of them, however many texts it is sent', async () => {
    const hot = 'select name from things where n = $1';
    const kept = async (text: string) => (await pg.query<{ count: number }>('select count(*)::int as count from pg_prepared_statements where statement = $1', [text])).rows[0]!.count;
    for (let i = 0; i < 400; i++) {
      const { rows } = await prepared.query<{ value: number }>(`select $1::int + ${i} as value`, [1]);
      expect(rows).toEqual([{ value: 1 + i }]);
      expect((await prepared.query(hot, [2])).rows).toEqual([{ name: 'two' }]);
    }
    // 300 kept, and at most the last one evicted still waiting to be closed.
    expect(await preparedCount()).toBeGreaterThanOrEqual(300);
    expect(await preparedCount()).toBeLessThanOrEqual(301);
    expect(await kept(hot)).toBe(1);
    expect(await kept('select $1::int + 0 as value')).toBe(0);
    expect(await kept('select $1::int + 399 as value')).toBe(1);
  });

  it('takes PGlite’s own path for what it does not prepare', async () => {
    await prepared.query('create table other (id int)');
    await prepared.transaction((tx) => tx.query('insert into other values (1)').then(() => tx.query('alter table other add column name text')));
    expect((await prepared.query('select * from other')).rows).toEqual([{ id: 1, name: null }]);
    await prepared.query('drop table other');
  });

  it('runs a batch (a long parameter list) as PGlite query does, in two calls, and keeps none of it', async () => {
    // Six rows of three parameters: a text per row count, so never kept.
    const insertOf = (rows: number) =>
      `insert into things (n, big, doc) values ${Array.from({ length: rows }, (_, r) => `($${r * 3 + 1}, $${r * 3 + 2}, $${r * 3 + 3})`).join(', ')} returning n, big, doc`;
    const rowsFrom = (first: number, count: number) => Array.from({ length: count }, (_, r) => [first + r, r === 1 ? null : 9_007_199_254_740_993n, r === 2 ? undefined : { r, tags: ['x', null] }]).flat();
    const before = await preparedCount();
    const calls = vi.spyOn(pg, 'execProtocol');
    const ours = await prepared.query(insertOf(6), rowsFrom(100, 6));
    // Parse and describe, then bind and execute; none of PGlite's own query.
    expect(calls).toHaveBeenCalledTimes(2);
    calls.mockRestore();
    expect(ours).toEqual({ ...(await pg.query(insertOf(6), rowsFrom(200, 6))), rows: ours.rows });
    expect(ours).toMatchObject({ command: 'INSERT', affectedRows: 6, rowCount: 6 });
    expect(ours.rows.slice(0, 3)).toEqual([
      { n: 100, big: 9_007_199_254_740_993n, doc: { r: 0, tags: ['x', null] } },
      { n: 101, big: null, doc: { r: 1, tags: ['x', null] } },
      { n: 102, big: 9_007_199_254_740_993n, doc: null },
    ]);

    // In a transaction, next to a prepared statement, in array rows as drizzle asks them.
    const many = Array.from({ length: 20 }, (_, i) => 100 + i);
    const listed = `select n, name, at from things where n in (${many.map((_, i) => `$${i + 1}`).join(', ')}) order by n`;
    await prepared.query('update things set at = $1 where n = $2', [new Date(Date.UTC(2026, 11, 6, 23, 0)), 102]);
    const inside = await prepared.transaction(async (tx) => {
      await tx.query('update things set name = $1 where n = $2', ['renamed', 101]);
      return tx.query(listed, many, drizzleLike);
    });
    expect(inside).toEqual(await pg.query(listed, many, drizzleLike));
    expect(inside.rows.slice(0, 3)).toEqual([[100, null, null], [101, 'renamed', null], [102, null, '2026-12-06 23:00:00+00']]);

    // A failure is PostgreSQL's, with the statement; it changes nothing, aborts its transaction, and the next batch works.
    expect(await failureOf(prepared.query(insertOf(6), rowsFrom(104, 6)))).toMatchObject({ code: '23505', query: insertOf(6), params: rowsFrom(104, 6) });
    expect(await failureOf(prepared.query(insertOf(6).replace('values', 'valeus'), rowsFrom(300, 6)))).toMatchObject({ code: '42601' });
    const aborted = prepared.transaction(async (tx) => {
      await tx.query('update things set name = $1 where n = $2', ['lost', 100]);
      await tx.query(insertOf(6), rowsFrom(105, 6));
    });
    expect(await failureOf(aborted)).toMatchObject({ code: '23505' });
    expect((await prepared.query('select count(*)::int as count from things where n between $1 and 199 or name = $2', [106, 'lost'])).rows).toEqual([{ count: 0 }]);
    expect((await prepared.query(insertOf(7), rowsFrom(300, 7))).affectedRows).toBe(7);
    // Only the three short texts were kept.
    expect(await preparedCount()).toBe(before + 3);
  });
});
