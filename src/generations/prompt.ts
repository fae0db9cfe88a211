import type { LlmMessage } from '../llm/provider.js';
import { startingVersion } from '../workspace/workspace.js';
import { fileBlocks } from './output-parser.js';

// What the model sees: the target's system prompt, the files it builds on, and the
// session's earlier turns, bounded so the oldest turns go first.

export interface PromptInput {
  systemPrompt: string;
  template: Record<string, string>;
  /** The template file the model rewrites whole to add a package (TargetSpec.manifest): always shown. */
  manifest: string;
  parentFiles: { path: string; content: string }[];
  turns: { role: 'USER' | 'MODEL'; content: string }[];
  prompt: string;
  maxChars?: number;
}

const DEFAULT_MAX_CHARS = 400_000;

/** What every prompt of a start carries whatever its files and turns: the target's system prompt and the user's words (a start's budget floor). */
export const leastPromptCharacters = (target: Pick<PromptInput, 'systemPrompt'>, prompt: string) => target.systemPrompt.length + prompt.length;

export function buildPrompt(input: PromptInput): { systemPrompt: string; messages: LlmMessage[] } {
  const maxChars = input.maxChars ?? DEFAULT_MAX_CHARS;
  // The project as it stands: the parent's version, or the template on a first request.
  const version = [...startingVersion(input.template, input.parentFiles)].map(([path, content]) => ({ path, content }));
  // The system prompt names the template's files; their content is repeated where it changed, and
  // always for the manifest, which the model rewrites whole to add a package and so must see. The
  // manifest comes first, so that files too big to fit never push it out.
  const { manifest } = input;
  const shown = [
    ...version.filter((file) => file.path === manifest),
    ...version.filter((file) => file.path !== manifest && input.template[file.path] !== file.content),
  ];
  // The system prompt lists the template's files: those not in the parent's version (deleted by an
  // earlier answer, or added to the template since) are not in the project.
  const kept = new Set(input.parentFiles.map((file) => file.path));
  const missing = input.parentFiles.length > 0 ? Object.keys(input.template).filter((path) => !kept.has(path)).sort() : [];
  let systemPrompt = input.systemPrompt;
  if (shown.length > 0) {
    const source = input.parentFiles.length > 0 ? 'the previous generation left them' : 'the template has them';
    systemPrompt += `\n\n# Current files\nThe project's files as ${source}:\n${fitFiles(shown, maxChars / 2).join('\n')}`;
  }
  if (missing.length > 0) {
    systemPrompt += `\n\n# Template files not in the project\nThese template files are not in the project (write one to have it again): ${missing.join(', ')}`;
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

/** A model answer with its file contents left out (they are in the files already): each block the parser would read becomes `[wrote <path>]`. */
export function summariseFiles(output: string): string {
  const parts: string[] = [];
  let from = 0;
  for (const block of fileBlocks(output)) {
    parts.push(output.slice(from, block.start), `[wrote ${block.path}]`);
    from = block.end;
  }
  parts.push(output.slice(from));
  return parts.join('');
}

/** Characters at most of the note naming the files left out: room kept for it in the files' budget. */
export const MAX_LEFT_OUT_NOTE_CHARS = 4_000;

/**
 * The files' blocks that fit in `budget`, in order, and a note naming those that did not:
 * a file too big for what is left is skipped, not the end of the list, and the model learns
 * that the others exist, so it does not write them again from nothing.
 */
function fitFiles(files: { path: string; content: string }[], budget: number): string[] {
  const blocks = files.map((file) => ({ path: file.path, text: `<file path="${file.path}">\n${file.content}</file>` }));
  const total = blocks.reduce((sum, block) => sum + block.text.length, 0);
  const room = total <= budget ? budget : budget - MAX_LEFT_OUT_NOTE_CHARS;
  const kept: string[] = [];
  const leftOut: string[] = [];
  let used = 0;
  for (const block of blocks) {
    if (used + block.text.length > room) {
      leftOut.push(block.path);
      continue;
    }
    kept.push(block.text);
    used += block.text.length;
  }
  if (leftOut.length > 0) kept.push(leftOutNote(leftOut));
  return kept;
}

/**
 * Tells the model which files it is not shown: they are in the project unchanged. The list
 * stops before MAX_LEFT_OUT_NOTE_CHARS and counts the rest.
 */
export function leftOutNote(paths: readonly string[]): string {
  const one = paths.length === 1;
  const head = `[${paths.length} file${one ? '' : 's'} left out for length; ${one ? 'it is' : 'they are'} still in the project, unchanged. Write one only to change it, keeping what it holds: `;
  // Room for the count of the rest and the closing bracket.
  const limit = MAX_LEFT_OUT_NOTE_CHARS - 40;
  const named: string[] = [];
  let length = head.length;
  for (const path of paths) {
    if (length + path.length + 2 > limit) break;
    named.push(path);
    length += path.length + 2;
  }
  const rest = paths.length - named.length;
  return `${head}${named.join(', ')}${rest > 0 ? ` and ${rest} more` : ''}]`;
}
