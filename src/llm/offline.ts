import type { ProjectTarget } from '../toolchain/targets.js';
import { BUILD_ERROR_REQUEST, describePrompt, flutterApp, webApp } from './offline-apps.js';
import type { LlmEvent, LlmProvider, LlmRequest } from './provider.js';
import { abortableDelay } from './streaming.js';

export interface OfflineProviderOptions {
  /** Pause between chunks (OFFLINE_CHUNK_DELAY_MS); 0 still yields to the event loop between chunks. */
  chunkDelayMs: number;
}

const MIN_CHUNK = 40;
const MAX_CHUNK = 120;

/** The default provider: no network, a small buildable app for the target that reflects the prompt. */
export function createOfflineProvider({ chunkDelayMs }: OfflineProviderOptions): LlmProvider {
  return {
    name: 'offline',
    model: 'offline-template',
    stream: (request) => streamApp(request, chunkDelayMs),
  };
}

/**
 * The whole answer the offline provider streams: a little prose, then one file block.
 * A prompt asking for a build error (BUILD_ERROR_REQUEST) gets code that fails the
 * target's checker in the first answer, and the repaired code in a fix round.
 */
export function offlineApp(target: ProjectTarget, prompt: string, isFollowUp: boolean, round = 0): string {
  const brief = { ...describePrompt(prompt), buildError: round === 0 && BUILD_ERROR_REQUEST.test(prompt) };
  // Prose never carries < or >, so prompt text cannot open or close a protocol tag.
  const title = brief.title.replace(/</g, '‹').replace(/>/g, '›');
  const kind = target === 'WEB' ? 'a React + TypeScript page' : 'a Flutter Material app';
  const intro =
    round > 0
      ? `I fixed what the build reported in the app (${kind}) for “${title}”.`
      : isFollowUp
        ? `I updated the previous app (${kind}) for your new request, “${title}”.`
        : `Here is ${kind} for your request, “${title}”.`;
  const file =
    target === 'WEB' ? { path: 'src/App.tsx', content: webApp(brief) } : { path: 'lib/main.dart', content: flutterApp(brief) };
  return (
    `${intro} It shows what you asked for and turns it into a checklist you can tick off.\n\n` +
    `<file path="${file.path}">\n${file.content}</file>\n`
  );
}

async function* streamApp(request: LlmRequest, chunkDelayMs: number): AsyncGenerator<LlmEvent> {
  const { messages, signal } = request;
  const round = request.round ?? 0;
  // A fix round ends with the fix request; the user's own prompt is the turn before the model's answer.
  const own = round > 0 ? messages.slice(0, messages.findLastIndex((message) => message.role === 'model')) : messages;
  const prompt = own.findLast((message) => message.role === 'user')?.content ?? '';
  const text = offlineApp(request.target, prompt, own.length > 1, round);
  for (const chunk of chunksOf(text)) {
    await abortableDelay(chunkDelayMs, signal);
    yield { type: 'text', text: chunk };
  }
  signal.throwIfAborted();
  const inputChars = messages.reduce((sum, message) => sum + message.content.length, request.systemPrompt.length);
  yield { type: 'usage', usage: { inputTokens: Math.ceil(inputChars / 4), outputTokens: Math.ceil(text.length / 4) } };
}

/** Pieces of varying size, like a model's, never splitting a character's surrogate pair. */
function* chunksOf(text: string): Generator<string> {
  const points = Array.from(text);
  for (let start = 0, n = 0; start < points.length; n++) {
    const size = MIN_CHUNK + ((n * 37) % (MAX_CHUNK - MIN_CHUNK + 1));
    yield points.slice(start, start + size).join('');
    start += size;
  }
}
