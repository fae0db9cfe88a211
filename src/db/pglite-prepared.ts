import { type messages, parse, protocol, type PGlite, type QueryOptions, type Results, type Transaction, types } from '@electric-sql/pglite';

/**
 * Drizzle's client for the embedded database: PGlite with its statements prepared once.
 *
 * PGlite's `query` parses, describes and plans a statement at every run, in six calls into
 * its WebAssembly (parse, describe, bind, describe, execute, sync). Drizzle sends the same
 * few dozen texts over and over, so a text that reads or writes rows becomes a named
 * prepared statement the first time it is seen (its parameter and row types learnt then),
 * and every later run is one call: bind, execute, sync. PostgreSQL keeps the plan and
 * replans by itself when a table changes or the role does (row security). Parameters are
 * serialised by PGlite's serialisers and values parsed by its parsers, for the types the
 * server gave, so results are those `query` returns; one difference: inside a transaction, a
 * statement whose table changed its row type fails (0A000) where `query` would plan afresh.
 * A long parameter list (a batch's multi-row insert or `inArray`, a new text per length) is
 * never kept: it is parsed as the unnamed statement and run, two calls in all. DDL and anything
 * else take PGlite's own path. Parameter types learnt before DDL may no longer fit, so DDL
 * sent here (drizzle's migrator does) forgets every statement: once it has run, again when
 * its transaction ends, and meanwhile every preparation starts afresh. DDL sent through
 * `exec` is not seen.
 */
export class PreparedPglite {
  /** By text, least recently used first. */
  private readonly statements = new Map<string, Statement>();
  /** Statements to close with the next preparation. */
  private closing: string[] = [];
  /** DDL sent and not forgotten after yet: meanwhile every preparation starts afresh, as a query queued behind it must not bind what it changed. */
  private ddlInFlight = 0;

  constructor(readonly pg: PGlite) {}

  /** As PGlite's `query`: alone, it waits for any transaction in progress. */
  async query<T>(text: string, params: unknown[] = [], options?: QueryOptions): Promise<Results<T>> {
    if (!isPreparable(text, options)) return this.passOn(DDL.test(text), () => this.pg.query<T>(text, params, options));
    await this.pg._checkReady();
    return this.pg._runExclusiveTransaction(() =>
      this.pg._runExclusiveQuery(async () => {
        const result = await this.run<T>(text, params, options, true);
        await this.pg.syncToFs();
        return result;
      }),
    );
  }

  async transaction<T>(callback: (tx: Pick<Transaction, 'query'>) => Promise<T>): Promise<T> {
    // After DDL, until the transaction has ended, nothing prepared is kept: a rollback (of it
    // or to a savepoint) would bring back the types that statements prepared since then fit.
    let changed = false;
    try {
      return await this.pg.transaction((tx) =>
        callback({
          query: async <R>(text: string, params: unknown[] = [], options?: QueryOptions) => {
            if (!isPreparable(text, options)) {
              if (!changed && DDL.test(text)) {
                changed = true;
                this.ddlInFlight++;
              }
              return tx.query<R>(text, params, options);
            }
            if (tx.closed) throw new Error('Transaction is closed');
            return this.pg._runExclusiveQuery(() => this.run<R>(text, params, options, false));
          },
        }),
      );
    } finally {
      if (changed) {
        this.forgetAll();
        this.ddlInFlight--;
      }
    }
  }

  /** PGlite's own path for a text alone; after DDL, every statement is forgotten. */
  private async passOn<T>(changes: boolean, query: () => Promise<T>): Promise<T> {
    if (changes) this.ddlInFlight++;
    try {
      return await query();
    } finally {
      if (changes) {
        this.forgetAll();
        this.ddlInFlight--;
      }
    }
  }

  private forgetAll(): void {
    this.forget([...this.statements.keys()]);
  }

  private forget(texts: string[]): void {
    for (const text of texts) {
      const statement = this.statements.get(text);
      if (!statement) continue;
      this.statements.delete(text);
      this.closing.push(statement.name);
    }
  }

  private async run<T>(text: string, params: unknown[], options: QueryOptions | undefined, mayRetry: boolean): Promise<Results<T>> {
    if (params.length > MAX_PARAMS) return this.runOnce<T>(text, params, options);
    const statement = await this.prepare(text, params, options);
    try {
      return await this.execute<T>(statement, text, params, options);
    } catch (error) {
      const { code, message } = error as { code?: string; message?: string };
      if (code === '26000') {
        // Deallocated behind our back: whatever else went too shows only at its own bind, so all of them.
        this.forgetAll();
      } else if (code === '0A000' && message === 'cached plan must not change result type') {
        this.forget([text]); // a table under it changed its row type
      } else {
        throw error;
      }
      // Both errors come at bind, before anything ran. Inside a transaction they have aborted it.
      if (!mayRetry) throw error;
      return this.run<T>(text, params, options, false);
    }
  }

  /**
   * The rows as PGlite's parseResults makes them, without its copy of every parser it
   * knows merged with the caller's (about 300 of them) at each statement, most of a short
   * result's cost: a value's parser is looked up where it is needed.
   */
  private resultOf<T>(statement: Statement, answer: messages.BackendMessage[], options?: QueryOptions): Results<T> {
    const fields = statement.fields;
    const own = options?.parsers;
    const value = (text: string | null, i: number) => {
      if (text === null) return null;
      const type = fields[i]!.dataTypeID;
      const parser = own?.[type] ?? this.pg.parsers[type] ?? defaultParsers[type];
      return parser ? parser(text, type) : text;
    };
    const rows: unknown[] = [];
    for (const message of answer) {
      if (message.name === 'dataRow') {
        const values = (message as messages.DataRowMessage).fields;
        rows.push(options?.rowMode === 'array' ? values.map(value) : Object.fromEntries(values.map((text, i) => [fields[i]!.name, value(text, i)])));
      } else if (message.name === 'commandComplete') {
        const words = (message as messages.CommandCompleteMessage).text.split(' ');
        const command = words[0]!;
        const count = Number.parseInt(words.at(-1)!, 10);
        const affectedRows = AFFECTING.has(command) ? count : 0;
        return { rows: rows as T[], fields: fields as Results<T>['fields'], command, affectedRows, ...(Number.isNaN(count) ? {} : { rowCount: count }) } as Results<T>;
      }
    }
    return { rows: [], fields: [], affectedRows: 0 };
  }

  private async prepare(text: string, params: unknown[], options?: QueryOptions): Promise<Statement> {
    if (this.ddlInFlight > 0) this.forgetAll();
    const known = this.statements.get(text);
    if (known) {
      // Most recently used goes last.
      this.statements.delete(text);
      this.statements.set(text, known);
      return known;
    }
    const statement = await this.describe(`kiln_${++named}`, text, params, options);
    this.statements.set(text, statement);
    // The least recently used goes once this one is in; it is closed with the next preparation.
    if (this.statements.size > MAX_STATEMENTS) this.forget([this.statements.keys().next().value!]);
    return statement;
  }

  /** `text` parsed as the statement `name` (the unnamed one: ''), with its parameter and row types; statements forgotten are closed with it. */
  private async describe(name: string, text: string, params: unknown[], options?: QueryOptions): Promise<Statement> {
    const closes = this.closing.map((closed) => serialize.close({ type: 'S', name: closed }));
    this.closing = [];
    const answer = await this.exchange([...closes, serialize.parse({ name, text }), serialize.describe({ type: 'S', name }), serialize.sync()], text, params, options);
    const description = answer.find((message): message is messages.RowDescriptionMessage => message.name === 'rowDescription');
    // Frozen: a kept statement's fields are shared by all its results.
    const fields = Object.freeze(description?.fields.map(({ name, dataTypeID }) => Object.freeze({ name, dataTypeID })) ?? []);
    return { name, types: parse.parseDescribeStatementResults(answer), fields };
  }

  /** A statement not worth keeping: parsed as the unnamed one, which any later unnamed parse or `exec` replaces. */
  private async runOnce<T>(text: string, params: unknown[], options: QueryOptions | undefined): Promise<Results<T>> {
    return this.execute<T>(await this.describe('', text, params, options), text, params, options);
  }

  private async execute<T>(statement: Statement, text: string, params: unknown[], options: QueryOptions | undefined): Promise<Results<T>> {
    const values = params.map((value, i) => {
      if (value === null || value === undefined) return null;
      const serializer = options?.serializers?.[statement.types[i]!] ?? this.pg.serializers[statement.types[i]!];
      return serializer ? serializer(value) : (value as { toString(): string }).toString();
    });
    const answer = await this.exchange([serialize.bind({ statement: statement.name, values }), serialize.execute({}), serialize.sync()], text, params, options);
    return this.resultOf<T>(statement, answer, options);
  }

  private async exchange(parts: Uint8Array[], text: string, params: unknown[], options?: QueryOptions): Promise<messages.BackendMessage[]> {
    try {
      const { messages } = await this.pg.execProtocol(Buffer.concat(parts), { syncToFs: false, ...(options?.onNotice ? { onNotice: options.onNotice } : {}) });
      return messages;
    } catch (error) {
      // As PGlite's query does: the statement travels with its error.
      if (error instanceof Error) Object.assign(error, { query: text, params, queryOptions: options });
      throw error;
    }
  }
}

interface Statement {
  name: string;
  /** The parameters' type oids, as the server inferred them. */
  types: number[];
  /** What each row holds: none for a statement that returns no rows. */
  fields: readonly { readonly name: string; readonly dataTypeID: number }[];
}

const { serialize } = protocol;
const defaultParsers = types.parsers as Record<number, (text: string, type: number) => unknown>;
/** Commands whose count is of rows changed. */
const AFFECTING = new Set(['INSERT', 'UPDATE', 'DELETE', 'COPY', 'MERGE']);
/** Statements kept at most, about 30 KB of the backend's memory each; the hot ones are a few dozen. */
const MAX_STATEMENTS = 300;
/** Longer parameter lists are batches, with a text per length: not worth keeping. */
const MAX_PARAMS = 16;
/** Statement names are unique in the process, so two clients of one PGlite never collide. */
let named = 0;

const isPreparable = (text: string, options?: QueryOptions): boolean =>
  !options?.blob && !options?.paramTypes && /^\s*(select|insert|update|delete|with)\b/i.test(text);

/** What may change a table's types, the statements kept, or how a name resolves. */
const DDL = /^\s*(create|alter|drop|comment|grant|revoke|truncate|do|deallocate|discard|(set|reset)\s+(session\s+|local\s+)?search_path)\b/i;
