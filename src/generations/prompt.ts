import type { LlmMessage } from '../llm/provider.js';

// What the model sees: the target's system prompt, the files it builds on, and the
// session's earlier turns, bounded so the oldest turns go first.

export interface PromptInput {
  systemPrompt: string;
  template: Record<string, string>;
  parentFiles: { path: string; content: string }[];
  turns: { role: 'USER' | 'MODEL'; content: string }[];
  prompt: string;
  maxChars?: number;
}

const DEFAULT_MAX_CHARS = 400_000;

export function buildPrompt(input: PromptInput): { systemPrompt: string; messages: LlmMessage[] } {
  const maxChars = input.maxChars ?? DEFAULT_MAX_CHARS;
  // Template files the model already knows from the system prompt need not be repeated.
  const changed = input.parentFiles.filter((file) => input.template[file.path] !== file.content);
  let systemPrompt = input.systemPrompt;
  if (changed.length > 0) {
    const blocks = changed.map((file) => `<file path="${file.path}">\n${file.content}</file>`);
    systemPrompt += `\n\n# Current files\nThe project's files as the previous generation left them:\n${fitBlocks(blocks, maxChars / 2).join('\n')}`;
  }
  const messages: LlmMessage[] = input.turns.map((turn) => ({
    role: turn.role === 'USER' ? 'user' : 'model',
    // Earlier file contents are in "Current files" already; the turn keeps only what it did.
    content: turn.role === 'MODEL' ? summariseFiles(turn.content) : turn.content,
  }));
  messages.push({ role: 'user', content: input.prompt });
  let total = systemPrompt.length + messages.reduce((sum, m) => sum + m.content.length, 0);
  while (total > maxChars && messages.length > 1) {
    total -= messages.shift()!.content.length;
  }
  // A conversation starts with the user.
  while (messages[0]?.role === 'model') messages.shift();
  return { systemPrompt, messages };
}

/** A model answer with its file contents left out (they are in the files already). */
export function summariseFiles(output: string): string {
  return output.replace(/<file path="([^"]*)">[\s\S]*?<\/file>/g, '[wrote $1]');
}

function fitBlocks(blocks: string[], budget: number): string[] {
  const kept: string[] = [];
  let used = 0;
  for (const block of blocks) {
    if (used + block.length > budget) {
      kept.push(`[${blocks.length - kept.length} more files omitted for length]`);
      break;
    }
    kept.push(block);
    used += block.length;
  }
  return kept;
}
