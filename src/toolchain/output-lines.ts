export type OutputStream = 'STDOUT' | 'STDERR';

export interface OutputLine {
  stream: OutputStream;
  text: string;
}

// No PostgreSQL text holds NUL: a tool that prints one (binary output) gets U+FFFD in its log.
const NUL = '\u0000';
const REPLACEMENT = '\uFFFD';

/**
 * `text` in at most `maxChars` UTF-16 code units: a longer text keeps its first `maxChars - 1`
 * and ends in an ellipsis, so a runaway message cannot fill a log, a prompt or a column.
 */
export function truncateWithEllipsis(text: string, maxChars: number): string {
  return text.length > maxChars ? `${text.slice(0, maxChars - 1)}…` : text;
}

/** Splits decoded text into lines without ever holding more than `maxLength` characters of one line. */
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
    const room = this.maxLength - this.partial.length;
    if (end - start > room) {
      this.partial += text.slice(start, start + room);
      this.overflowed = true;
    } else {
      this.partial += text.slice(start, end);
    }
  }

  private take(): string {
    const line = (this.overflowed ? `${this.partial.slice(0, this.maxLength - 1)}…` : this.partial.replace(/\r$/, '')).replaceAll(NUL, REPLACEMENT);
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
