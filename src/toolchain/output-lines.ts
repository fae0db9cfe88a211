export type OutputStream = 'STDOUT' | 'STDERR';

export interface OutputLine {
  stream: OutputStream;
  text: string;
}

// No PostgreSQL text holds NUL: a tool that prints one (binary output) gets U+FFFD in its log.
const NUL = '\u0000';
const REPLACEMENT = '\uFFFD';
// Terminal colours and links (CSI and OSC sequences), for tools that colour despite NO_COLOR;
// a stray ESC (a sequence cut at the line limit) goes too.
const TERMINAL_ESCAPES = /\u001b\[[0-?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)|\u001b/g;

/**
 * `text` in at most `maxChars` UTF-16 code units: a longer text keeps its first `maxChars - 1`
 * and ends in an ellipsis, so a runaway message cannot fill a log, a prompt or a column.
 */
export function truncateWithEllipsis(text: string, maxChars: number): string {
  return text.length > maxChars ? `${keepFirst(text, maxChars - 1)}…` : text;
}

/** The first `count` code units of `text`, less a high surrogate whose pair the cut left out. */
function keepFirst(text: string, count: number): string {
  const kept = text.slice(0, count);
  return /[\uD800-\uDBFF]$/.test(kept) ? kept.slice(0, -1) : kept;
}

/** Splits decoded text into lines without ever holding more than `maxLength` characters of one line (and its '\r'). */
export class LineSplitter {
  private partial = '';
  private overflowed = false;

  constructor(private readonly maxLength: number) {}

  push(text: string): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let end = text.indexOf('\n'); end !== -1; end = text.indexOf('\n', start)) {
      this.append(text, start, end);
      lines.push(this.take());
      start = end + 1;
    }
    this.append(text, start, text.length);
    return lines;
  }

  /** The unterminated last line, if any. */
  end(): string[] {
    return this.partial === '' && !this.overflowed ? [] : [this.take()];
  }

  private append(text: string, start: number, end: number): void {
    if (this.overflowed) return;
    // One more than a line may hold: the '\r' of a CRLF ending is not part of the line.
    const room = this.maxLength + 1 - this.partial.length;
    if (end - start > room) {
      this.partial += text.slice(start, start + room);
      this.overflowed = true;
    } else {
      this.partial += text.slice(start, end);
    }
  }

  private take(): string {
    const plain = (this.overflowed ? this.partial : this.partial.replace(/\r$/, '')).replace(TERMINAL_ESCAPES, '').replaceAll(NUL, REPLACEMENT);
    // Cut where the line was cut, even if what was kept is short without its escapes.
    const line = this.overflowed ? `${keepFirst(plain, this.maxLength - 1)}…` : truncateWithEllipsis(plain, this.maxLength);
    this.partial = '';
    this.overflowed = false;
    return line;
  }
}

export interface CollectorLimits {
  maxLines: number;
  tailLines: number;
}

/**
 * Delivers lines of both streams one at a time, in the order they were read, up to
 * `maxLines`; counts the rest and keeps only the last `tailLines` in memory.
 */
export class OutputCollector {
  readonly tail: string[] = [];
  private delivered = 0;
  private omitted = 0;
  private pending: Promise<void> = Promise.resolve();

  constructor(
    private readonly onLine: (line: OutputLine) => void | Promise<void>,
    private readonly limits: CollectorLimits,
  ) {}

  /** Settles when these lines are delivered, so a slow consumer slows the reader instead of filling memory. */
  add(stream: OutputStream, texts: string[]): Promise<void> {
    for (const text of texts) {
      this.tail.push(text);
      if (this.tail.length > this.limits.tailLines) this.tail.shift();
      if (this.delivered < this.limits.maxLines) {
        this.delivered += 1;
        this.deliver({ stream, text });
      } else {
        this.omitted += 1;
      }
    }
    return this.pending;
  }

  /** Delivers the single omission marker, once both streams have ended. */
  finish(): Promise<void> {
    if (this.omitted > 0) this.deliver({ stream: 'STDOUT', text: `[… ${this.omitted} more lines omitted]` });
    return this.pending;
  }

  private deliver(line: OutputLine): void {
    this.pending = this.pending.then(() => this.onLine(line));
  }
}
