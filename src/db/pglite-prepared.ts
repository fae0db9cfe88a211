import { type messages, parse, protocol, type PGlite, type QueryOptions, type Results, type Transaction } from '@electric-sql/pglite';

/**
 * Drizzle's client for the embedded database: PGlite with its statements prepared once.
 *
 * PGlite's `query` parses, describes and plans a statement at every run, in six calls into
 * its WebAssembly (parse, describe, bind, describe, execute, sync). Drizzle sends the same
 * few dozen texts over and over, so a text that reads or writes rows becomes a named
 * prepared statement the first time it is seen (its parameter and row types learnt then),
 * and every later run is one call: bind, execute, sync. PostgreSQL keeps the plan and
 * replans by itself when a table changes or the role does (row security). Parameters are
 * serialised, and rows and errors parsed, by PGlite's own code for the types the server
 * gave, so results are the ones `query` returns. Anything else (DDL, a COPY with a blob)
 * takes PGlite's own path.
 */
export class PreparedPglite {
  private readonly statements = new Map<string, Statement>();
  private named = 0;

  constructor(readonly pg: PGlite) {}

  /** As PGlite's `query`: alone, it waits for any transaction in progress. */
  async query<T>(text: string, params: unknown[] = [], options?: QueryOptions): Promise<Results<T>> {
    if (!isPreparable(text, options)) return this.pg.query<T>(text, params, options);
    await this.pg._checkReady();
    const result = await this.pg._runExclusiveTransaction(() => this.pg._runExclusiveQuery(() => this.run<T>(text, params, options, true)));
    await this.pg.syncToFs();
    return result;
  }

  transaction<T>(callback: (tx: Pick<Transaction, 'query'>) => Promise<T>): Promise<T> {
    return this.pg.transaction((tx) =>
      callback({
        query: <R>(text: string, params: unknown[] = [], options?: QueryOptions) => {
          if (!isPreparable(text, options)) return tx.query<R>(text, params, options);
          if (tx.closed) throw new Error('Transaction is closed');
          return this.pg._runExclusiveQuery(() => this.run<R>(text, params, options, false));
        },
      }),
    );
  }

  private async run<T>(text: string, params: unknown[], options: QueryOptions | undefined, mayRetry: boolean): Promise<Results<T>> {
    const statement = await this.prepare(text, params, options);
    const values = params.map((value, i) => {
      if (value === null || value === undefined) return null;
      const serializer = options?.serializers?.[statement.types[i]!] ?? this.pg.serializers[statement.types[i]!];
      return serializer ? serializer(value) : String(value);
    });
    try {
      const answer = await this.exchange([serialize.bind({ statement: statement.name, values }), serialize.execute({}), serialize.sync()], text, params, options);
      return parse.parseResults(statement.rowDescription ? [statement.rowDescription, ...answer] : answer, this.pg.parsers, options)[0] as Results<T>;
    } catch (error) {
      if (!isStale(error)) throw error;
      // A table under the statement changed its row type, or the session lost its statements.
      this.statements.delete(text);
      // Inside a transaction the error has aborted it: the caller decides what comes next.
      if (!mayRetry) throw error;
      return this.run<T>(text, params, options, false);
    }
  }

  private async prepare(text: string, params: unknown[], options?: QueryOptions): Promise<Statement> {
    const known = this.statements.get(text);
    if (known) return known;
    if (this.statements.size >= MAX_STATEMENTS) {
      // The code has a few hundred texts: past the cap, something builds them from data. Start again.
      const closes = [...this.statements.values()].map(({ name }) => serialize.close({ type: 'S', name }));
      this.statements.clear();
      await this.exchange([...closes, serialize.sync()], text, params, options);
    }
    const name = `kiln_${++this.named}`;
    const answer = await this.exchange([serialize.parse({ name, text }), serialize.describe({ type: 'S', name }), serialize.sync()], text, params, options);
    const statement = { name, types: parse.parseDescribeStatementResults(answer), rowDescription: answer.find((message) => message.name === 'rowDescription') };
    this.statements.set(text, statement);
    return statement;
  }

  private async exchange(parts: Uint8Array[], text: string, params: unknown[], options?: QueryOptions): Promise<messages.BackendMessage[]> {
    try {
      const { messages } = await this.pg.execProtocol(concat(parts), { syncToFs: false, ...(options?.onNotice ? { onNotice: options.onNotice } : {}) });
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
  /** Absent when the statement returns no rows. */
  rowDescription: messages.BackendMessage | undefined;
}

const { serialize } = protocol;
/** Prepared statements kept at most. */
const MAX_STATEMENTS = 1000;

const isPreparable = (text: string, options?: QueryOptions): boolean => !options?.blob && /^\s*(select|insert|update|delete|with)\b/i.test(text);

/** Errors of a prepared statement that preparing it again mends. */
const isStale = (error: unknown): boolean => {
  const { code, message } = error as { code?: string; message?: string };
  return (code === '0A000' && message === 'cached plan must not change result type') || code === '26000';
};

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
