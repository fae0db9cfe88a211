import { RunError } from '../errors.js';
import { MAX_PATH_LENGTH, UnsafeOutputError, assertSafeRelativePath, describePath } from './safe-path.js';

export const MAX_OUTPUT_FILES = 200;
export const MAX_FILE_BYTES = 1024 * 1024;
export const MAX_TOTAL_BYTES = 10 * 1024 * 1024;
/** A whole version (template, parent's files and every round's changes): what a generation keeps and a workspace holds. */
export const MAX_VERSION_FILES = 1000;
export const MAX_VERSION_BYTES = MAX_TOTAL_BYTES;
/**
 * The model's output a generation keeps over all its answers (first and fix rounds, with
 * continuations): room for every file the parser accepts and as much again of prose.
 */
export const MAX_GENERATION_OUTPUT_CHARS = 2 * MAX_TOTAL_BYTES;
/** One streamed chunk of the model's output: ~8 KiB of UTF-8 at most, whatever the characters. */
export const MAX_CHUNK_CHARS = 2730;
/**
 * What a generation's error message keeps: room for a failed step's last three lines (4,000
 * characters each) and its words; a provider's own message (up to 64 KiB) is cut to it.
 */
export const MAX_ERROR_MESSAGE_CHARS = 16_000;
/** Lines and characters of one step kept for the diagnostics parser (the log keeps them all, up to its own cap). */
export const MAX_PARSED_LINES = 5000;
export const MAX_PARSED_CHARS = 1_000_000;

export type OutputEvent = { type: 'file'; path: string; content: string } | { type: 'delete'; path: string };

export interface OutputParser {
  /** Feeds the next piece of model text; returns the blocks it completed. */
  push(chunk: string): OutputEvent[];
  /** Signals the end of the output; throws if it stopped inside a block. */
  end(): OutputEvent[];
}

/** The model's output breaks the file protocol (e.g. stops inside a block); ends the run as INVALID_OUTPUT. */
export class OutputProtocolError extends RunError {
  override readonly name = 'OutputProtocolError';
  readonly code = 'INVALID_OUTPUT';
}

// Enough for the longest allowed path plus attribute syntax; other attributes share the rest.
// A longer opening tag is prose, unless its path has begun: then it is refused (scanOpenTag).
const MAX_OPEN_TAG = MAX_PATH_LENGTH + 64;
// The longest closing tag (`</file`, whitespace, `>`); a longer one is content. It bounds what the parser holds back of a block.
const MAX_CLOSE_TAG = 64;
const SPACE = ' \t\r\n';
// An attribute's name, as XML spells one; its value is quoted with " or '.
const NAME_START = /[A-Za-z_:]/;
const NAME_CHAR = /[A-Za-z0-9_:.-]/;

type TagKind = 'file' | 'delete';

type TagScan =
  | { status: 'tag'; kind: TagKind; path: string; end: number }
  | { status: 'none' }
  // The text ran out first. `path` is what was read of the path so far, once inside it:
  // then the text can no longer be prose.
  | { status: 'incomplete'; path?: string }
  // The path ran past MAX_OPEN_TAG: an unsafe path, not prose.
  | { status: 'too-long'; path: string }
  // Plainly a tag (it has a path), but not one the parser can use: two paths, or too long.
  | { status: 'invalid'; problem: string };

/** The first closing tag at or after `from`, or where the text stops being decided (a possible tag cut off by its end). */
type CloseSearch = { status: 'tag'; start: number; end: number } | { status: 'undecided'; from: number };

interface Block {
  path: string;
  parts: string[];
  length: number;
  atStart: boolean;
}

export function createOutputParser(): OutputParser {
  let text = '';
  let pos = 0;
  let block: Block | undefined;
  let entries = 0;
  let totalBytes = 0;

  function drain(): OutputEvent[] {
    const events: OutputEvent[] = [];
    while (block ? readContent(block, events) : readProse(events));
    // Keep only what is still undecided: a possible tag start or the tail of a block.
    text = text.slice(pos);
    pos = 0;
    return events;
  }

  function readProse(events: OutputEvent[]): boolean {
    const lt = text.indexOf('<', pos);
    if (lt < 0) {
      pos = text.length;
      return false;
    }
    pos = lt;
    const scan = scanOpenTag(text, pos);
    if (scan.status === 'incomplete') return false;
    if (scan.status === 'too-long') throw new UnsafeOutputError(scan.path, `is longer than ${MAX_PATH_LENGTH} characters`);
    if (scan.status === 'invalid') throw new OutputProtocolError(`The model's output has ${scan.problem}`);
    if (scan.status === 'none') {
      pos += 1;
      return true;
    }
    assertSafeRelativePath(scan.path);
    if (++entries > MAX_OUTPUT_FILES) {
      throw new UnsafeOutputError(scan.path, `would make more than ${MAX_OUTPUT_FILES} files`);
    }
    pos = scan.end;
    if (scan.kind === 'delete') events.push({ type: 'delete', path: scan.path });
    else block = { path: scan.path, parts: [], length: 0, atStart: true };
    return true;
  }

  function readContent(current: Block, events: OutputEvent[]): boolean {
    if (current.atStart) {
      // A lone '\r' may be the start of '\r\n': wait for the next chunk to decide.
      if (pos >= text.length || (text[pos] === '\r' && pos + 1 === text.length)) return false;
      if (text.startsWith('\r\n', pos)) pos += 2;
      else if (text[pos] === '\n') pos += 1;
      current.atStart = false;
    }
    const close = findCloseTag(text, pos);
    if (close.status === 'undecided') {
      // Hold back a possible partial closing tag so a split one is still found.
      append(current, text.slice(pos, close.from));
      pos = close.from;
      return false;
    }
    append(current, text.slice(pos, close.start));
    pos = close.end;
    events.push({ type: 'file', path: current.path, content: finish(current) });
    block = undefined;
    return true;
  }

  function append(current: Block, part: string): void {
    current.parts.push(part);
    current.length += part.length;
    // UTF-16 length never exceeds UTF-8 length, so this bounds memory before the exact check.
    if (current.length > MAX_FILE_BYTES) throw tooLarge(current.path);
  }

  function finish(current: Block): string {
    const content = current.parts.join('');
    const size = Buffer.byteLength(content, 'utf8');
    if (size > MAX_FILE_BYTES) throw tooLarge(current.path);
    totalBytes += size;
    if (totalBytes > MAX_TOTAL_BYTES) {
      throw new UnsafeOutputError(current.path, `brings the output past ${MAX_TOTAL_BYTES / 1024 / 1024} MiB`);
    }
    return content;
  }

  return {
    push(chunk) {
      text += chunk;
      return drain();
    },
    end() {
      const events = drain();
      if (block) throw new OutputProtocolError(`The model's output ended inside ${describePath(block.path)}`);
      const pending = pos < text.length ? scanOpenTag(text, pos) : undefined;
      if (pending?.status === 'incomplete' && pending.path !== undefined) {
        throw new OutputProtocolError(`The model's output ended inside the tag of ${describePath(pending.path)}`);
      }
      return events;
    },
  };
}

function tooLarge(path: string): UnsafeOutputError {
  return new UnsafeOutputError(path, `is larger than ${MAX_FILE_BYTES / 1024 / 1024} MiB`);
}

/**
 * The complete `<file>` blocks of a whole text, read as the parser reads them (the same tags,
 * the first closing tag ends a block), in order and in linear time. Paths are not checked.
 * It stops at a block left open: no later one can close.
 */
export function* fileBlocks(text: string): Generator<{ start: number; end: number; path: string }> {
  for (let pos = 0, lt = text.indexOf('<'); lt >= 0; lt = text.indexOf('<', pos)) {
    const open = scanOpenTag(text, lt);
    pos = open.status === 'tag' ? open.end : lt + 1;
    if (open.status !== 'tag' || open.kind === 'delete') continue;
    const close = findCloseTag(text, open.end);
    if (close.status === 'undecided') return;
    yield { start: lt, end: close.end, path: open.path };
    pos = close.end;
  }
}

/**
 * Reads `<file path="…">` or `<delete path="…"/>` at `start` (a '<'): the path in double or
 * single quotes, other `name="value"` or `name='value'` attributes before or after it
 * (ignored), whitespace around `=`. Only the first MAX_OPEN_TAG characters are looked at, so
 * the answer never depends on chunk boundaries.
 *
 * Tag names are lower case only, as the model is told: `<File path="…">` and `<Delete …/>` are
 * JSX a model may show in its prose, and `</File>` may stand in a file's content. Prose stays
 * prose: `<file>`, `<file …>`, `<file path>`, `<file path="x"/>` or `<file name="x">` are no
 * tags. A tag with a path the parser cannot use (two paths, too long) is `invalid` and fails
 * the run with a message, rather than losing a file without a word.
 */
function scanOpenTag(text: string, start: number): TagScan {
  const limit = Math.min(text.length, start + MAX_OPEN_TAG);
  const capped = limit - start >= MAX_OPEN_TAG;
  let i = start + 1;
  let kind: TagKind | undefined;
  let path: string | undefined;
  let paths = 0;
  let attributes = 0;

  // The text ran out at i (inside a value, if `value` is given: what was read of it). Before the
  // cap that means "wait for more"; at the cap it is prose, unless an attribute has begun: then
  // the path itself ran past the cap (an unsafe path) or the tag did.
  const cut = (value?: { path: boolean; read: string }): TagScan => {
    const shownPath = path ?? (value?.path ? value.read : undefined);
    if (!capped) return shownPath === undefined ? { status: 'incomplete' } : { status: 'incomplete', path: shownPath };
    if (shownPath === undefined) return { status: 'none' };
    if (value?.path && paths === 0 && value.read.length > MAX_PATH_LENGTH) return { status: 'too-long', path: value.read };
    return invalid(`longer than ${MAX_OPEN_TAG} characters`, limit);
  };
  // Names the tag (its start, when long) in the message.
  const invalid = (problem: string, end = i): TagScan => ({
    status: 'invalid',
    problem: `a <${kind}> tag ${problem}: ${describePath(text.slice(start, end))}`,
  });
  // Matches `literal` at i: true when matched, false when not, undefined when text ran out.
  const expect = (literal: string): boolean | undefined => {
    for (const ch of literal) {
      if (i >= limit) return undefined;
      if (text[i] !== ch) return false;
      i += 1;
    }
    return true;
  };
  const skipSpace = (): number => {
    const from = i;
    while (i < limit && SPACE.includes(text[i]!)) i += 1;
    return i - from;
  };

  if (i >= limit) return cut();
  kind = text[i] === 'f' ? 'file' : text[i] === 'd' ? 'delete' : undefined;
  if (!kind) return { status: 'none' };
  const name = expect(kind);
  if (name !== true) return name === false ? { status: 'none' } : cut();

  for (;;) {
    const spaced = skipSpace() > 0;
    if (i >= limit) return cut();
    // The name ends with whitespace: `<filed>`, `<file>` and `<file/>` are no tags.
    if (!spaced && attributes === 0) return { status: 'none' };
    // `<delete …/>` as the model is told, or `<delete …>` as some models write it (the
    // `</delete>` they may add is prose). `<file …/>` stays prose: no content is meant.
    if (text[i] === '>' || (kind === 'delete' && text[i] === '/')) {
      const closing = expect(text[i] === '/' ? '/>' : '>');
      if (closing === undefined) return cut();
      if (!closing) return { status: 'none' };
      // `<file >` and `<file name="x.ts">` are prose.
      if (paths === 0) return { status: 'none' };
      if (paths > 1) return invalid('with more than one path attribute');
      return { status: 'tag', kind, path: path!, end: i };
    }
    // An attribute, after whitespace: `name="value"` or `name='value'` (whitespace allowed around `=`, as in XML).
    if (!spaced || !NAME_START.test(text[i]!)) return { status: 'none' };
    const nameFrom = i;
    while (i < limit && NAME_CHAR.test(text[i]!)) i += 1;
    const isPath = text.slice(nameFrom, i).toLowerCase() === 'path';
    skipSpace();
    const equals = expect('=');
    if (equals !== true) return equals === false ? { status: 'none' } : cut();
    skipSpace();
    if (i >= limit) return cut();
    const quote = text[i]!;
    if (quote !== '"' && quote !== "'") return { status: 'none' };
    i += 1;
    let valueEnd = i;
    while (valueEnd < limit && text[valueEnd] !== quote) valueEnd += 1;
    if (valueEnd >= limit) return cut({ path: isPath, read: text.slice(i, limit) });
    if (isPath) {
      paths += 1;
      path ??= text.slice(i, valueEnd);
    }
    attributes += 1;
    i = valueEnd + 1;
  }
}

/**
 * Finds the first `</file>` at or after `from`, whitespace allowed before its `>`
 * (as in an opening tag). Each candidate is looked at for MAX_CLOSE_TAG characters at most, so the
 * answer never depends on chunk boundaries, and what is undecided is never longer.
 */
function findCloseTag(text: string, from: number): CloseSearch {
  for (let lt = text.indexOf('<', from); lt >= 0; lt = text.indexOf('<', lt + 1)) {
    const limit = Math.min(text.length, lt + MAX_CLOSE_TAG);
    let i = lt + 1;
    for (const ch of '/file') {
      if (i >= limit || text[i] !== ch) break;
      i += 1;
    }
    if (i - lt < '</file'.length) {
      if (i >= text.length) return { status: 'undecided', from: lt };
      continue;
    }
    while (i < limit && SPACE.includes(text[i]!)) i += 1;
    if (i < limit && text[i] === '>') return { status: 'tag', start: lt, end: i + 1 };
    if (i >= text.length) return { status: 'undecided', from: lt };
  }
  return { status: 'undecided', from: text.length };
}
