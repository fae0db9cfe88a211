import { addUsage, LlmError, type LlmEvent, type LlmProvider, type LlmRequest, type LlmUsage, OutputLimitError } from './provider.js';

// An answer cut at the model's output limit is continued automatically: the cut
// answer goes back as the model's turn with a request to go on from its last
// character, and the parts stream out as one answer, so a <file> block split across
// them is parsed (and written) whole. Only when the limit persists does it fail.

export const CONTINUE_INSTRUCTION =
  'Your answer was cut off at the output limit. Continue it exactly where it stopped, from the very next character: ' +
  'no repetition, no preamble, no code fences. Close every block you had open as you normally would.';

/** The longest start of a continuation that is compared with the end of what came before. */
const MAX_OVERLAP = 400;
/** Shorter repeats are left alone: they may well be new text that happens to match. */
const MIN_OVERLAP = 24;

export function withContinuations(provider: LlmProvider, maxContinuations: number): LlmProvider {
  return {
    name: provider.name,
    model: provider.model,
    stream: (request) => continued(provider, request, maxContinuations),
  };
}

async function* continued(provider: LlmProvider, request: LlmRequest, maxContinuations: number): AsyncGenerator<LlmEvent> {
  let answer = '';
  const usage: LlmUsage = { inputTokens: 0, outputTokens: 0 };
  let sawUsage = false;
  const count = (part: LlmUsage | undefined) => {
    if (!part) return;
    sawUsage = true;
    usage.inputTokens += part.inputTokens;
    usage.outputTokens += part.outputTokens;
  };
  for (let part = 0; ; part++) {
    const messages =
      part === 0 ? request.messages : [...request.messages, { role: 'model' as const, content: answer }, { role: 'user' as const, content: CONTINUE_INSTRUCTION }];
    const stitch = part === 0 ? undefined : new OverlapTrimmer(answer);
    // The parts before this one, and what this one has cost so far.
    const partsBefore = { ...usage };
    const onUsage = request.onUsage;
    const partRequest: LlmRequest = {
      ...request,
      messages,
      ...(part === 0 ? {} : { continuation: true }),
      ...(onUsage ? { onUsage: (counted: LlmUsage) => onUsage(addUsage(partsBefore, counted)) } : {}),
    };
    try {
      for await (const event of provider.stream(partRequest)) {
        if (event.type === 'usage') {
          count(event.usage);
          continue;
        }
        const text = stitch ? stitch.push(event.text) : event.text;
        if (!text) continue;
        answer += text;
        yield { type: 'text', text };
      }
      const rest = stitch?.end();
      if (rest) {
        answer += rest;
        yield { type: 'text', text: rest };
      }
      if (sawUsage) yield { type: 'usage', usage };
      return;
    } catch (error) {
      // The text held back for comparison streamed all the same: the caller keeps what came.
      const rest = stitch?.end();
      if (rest) {
        answer += rest;
        yield { type: 'text', text: rest };
      }
      if (!(error instanceof OutputLimitError)) {
        // What the parts so far cost was spent all the same.
        if (sawUsage) yield { type: 'usage', usage };
        throw error;
      }
      count(error.usage);
      // The total so far, in case the reader stops before the next part's end (a copy: it grows).
      if (sawUsage) yield { type: 'usage', usage: { ...usage } };
      // A continuation carries the cut answer as the model's turn, and Gemini refuses an empty one.
      if (!answer) {
        throw new LlmError(`${error.message.replace(/\.$/, '')}: it stopped before any text (the model may have spent the limit thinking), and an empty answer cannot be continued; ask for a smaller change.`);
      }
      if (part >= maxContinuations) {
        const continuations = maxContinuations === 0 ? 'automatic continuation is off (LLM_MAX_CONTINUATIONS=0)' : `still after ${maxContinuations} automatic continuation${maxContinuations === 1 ? '' : 's'}`;
        throw new LlmError(`${error.message.replace(/\.$/, '')}: ${continuations}; ask for a smaller change.`);
      }
    }
  }
}

/**
 * Drops the start of a continuation that repeats the end of the answer before it
 * (models often restate the line they were cut in): the first characters are held
 * until they can be compared. Only an answer cut inside a line is trimmed, and only by a
 * repeat of that line's end or of whole lines up to it: a continuation that goes on right
 * from the cut in text that repeats itself (list items, table rows) matches the end
 * before it too, but from the middle of a line. Within a line, text made of one piece
 * repeated (`0, 0, 0`, `=====`) matches its own end wherever it is cut, so such a match
 * tells nothing and is kept: a restatement of it would be doubled, where trimming would
 * drop what the model went on with.
 */
class OverlapTrimmer {
  private held = '';
  private decided = false;

  constructor(private readonly before: string) {}

  push(text: string): string {
    if (this.decided) return text;
    this.held += text;
    return this.held.length >= MAX_OVERLAP ? this.decide() : '';
  }

  end(): string {
    return this.decided ? '' : this.decide();
  }

  private decide(): string {
    this.decided = true;
    const { held, before } = this;
    const cutLine = before.length - before.lastIndexOf('\n') - 1;
    if (cutLine === 0) return held;
    for (let k = Math.min(held.length, MAX_OVERLAP, before.length); k >= MIN_OVERLAP; k--) {
      const fromLineStart = k === before.length || before[before.length - k - 1] === '\n';
      const overlap = held.slice(0, k);
      if ((k <= cutLine || fromLineStart) && before.endsWith(overlap) && !repeatsItself(overlap)) return held.slice(k);
    }
    return held;
  }
}

/** Whether `text` is one piece said at least twice over (a period of at most half its length). */
function repeatsItself(text: string): boolean {
  for (let period = 1; period * 2 <= text.length; period++) {
    if (text.startsWith(text.slice(period))) return true;
  }
  return false;
}
