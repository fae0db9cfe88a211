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
      return this.resultOf<T>(statement, answer, options);
    } catch (error) {
      if (!isStale(error)) throw error;
      // A table under the statement changed its row type, or the session lost its statements.
      this.statements.delete(text);
      // Inside a transaction the error has aborted it: the caller decides what comes next.
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
    const description = answer.find((message): message is messages.RowDescriptionMessage => message.name === 'rowDescription');
    // Shared by every result of the statement, so frozen.
    const fields = Object.freeze(description?.fields.map(({ name, dataTypeID }) => Object.freeze({ name, dataTypeID })) ?? []);
    const statement = { name, types: parse.parseDescribeStatementResults(answer), fields };
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
  /** What each row holds: none for a statement that returns no rows. */
  fields: readonly { readonly name: string; readonly dataTypeID: number }[];
}

const { serialize } = protocol;
const defaultParsers = types.parsers as Record<number, (text: string, type: number) => unknown>;
/** Commands whose count is of rows changed. */
const AFFECTING = new Set(['INSERT', 'UPDATE', 'DELETE', 'COPY', 'MERGE']);
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
