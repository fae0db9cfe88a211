import { describe, expect, it } from 'vitest';
import { fixRequest } from '../src/generations/fix-rounds.js';
import { buildPrompt, MAX_LEFT_OUT_NOTE_CHARS } from '../src/generations/prompt.js';
import { RunFailure } from '../src/generations/run-failure.js';
import type { Diagnostic } from '../src/toolchain/diagnostics.js';
import { getTarget } from '../src/toolchain/targets.js';

// What the model is shown of a project too big for its prompt: a file that does not fit is
// left out and named, and the files after it are still shown.

const BIG = `${'{"row": 1234567890},\n'.repeat(11_000)}`; // 231,000 characters, past a 200,000 budget alone
const APP = 'export const App = () => null;\n';
const STORE = 'export const store = {};\n';
const block = (path: string, content: string) => `<file path="${path}">\n${content}</file>`;

describe('the current files in a follow-up prompt', () => {
  const prompt = (parentFiles: { path: string; content: string }[], maxChars?: number) =>
    buildPrompt({ systemPrompt: 'SYSTEM', template: {}, manifest: 'package.json', parentFiles, turns: [], prompt: 'Add a button', ...(maxChars ? { maxChars } : {}) });

  it('skips a file too big for the budget, shows the ones after it and names the one it left out', () => {
    const { systemPrompt } = prompt([
      { path: 'public/data.json', content: BIG },
      { path: 'src/App.tsx', content: APP },
      { path: 'src/store.ts', content: STORE },
    ]);

    expect(systemPrompt).toContain(block('src/App.tsx', APP));
    expect(systemPrompt).toContain(block('src/store.ts', STORE));
    expect(systemPrompt).not.toContain('<file path="public/data.json">');
    expect(systemPrompt).toMatch(/\[1 file left out for length; it is still in the project, unchanged\.[^\]]*public\/data\.json\]/);
    expect(systemPrompt.length).toBeLessThanOrEqual(200_000);
  });

  it('tells the model which template files an earlier answer deleted, and only in a follow-up', () => {
    const template = { 'src/main.tsx': 'main', 'index.html': 'html', 'README.md': 'readme' };
    const followUp = buildPrompt({ systemPrompt: 'SYSTEM', template, manifest: 'package.json', parentFiles: [{ path: 'index.html', content: 'html' }, { path: 'src/entry.tsx', content: APP }], turns: [], prompt: 'Add a button' });
    expect(followUp.systemPrompt).toMatch(/These template files are not in the project \(write one to have it again\): README\.md, src\/main\.tsx$/);
    const first = buildPrompt({ systemPrompt: 'SYSTEM', template, manifest: 'package.json', parentFiles: [], turns: [], prompt: 'A counter' });
    expect(first.systemPrompt).toBe('SYSTEM');
  });

  it('shows every file, with no note, when they all fit', () => {
    const { systemPrompt } = prompt([
      { path: 'src/App.tsx', content: APP },
      { path: 'src/store.ts', content: STORE },
    ]);
    expect(systemPrompt).toContain(block('src/App.tsx', APP));
    expect(systemPrompt).toContain(block('src/store.ts', STORE));
    expect(systemPrompt).not.toContain('left out');
  });

  it('bounds the list of names too: the files and the note stay within the budget however many are left out', () => {
    // A thousand files with long paths: their names alone would be 250,000 characters.
    const files = Array.from({ length: 1000 }, (_, i) => ({ path: `lib/${String(i).padStart(4, '0')}/${'n'.repeat(240)}.dart`, content: 'x'.repeat(300) }));
    const { systemPrompt } = prompt(files, 40_000);

    const note = systemPrompt.slice(systemPrompt.lastIndexOf('\n') + 1);
    expect(note).toMatch(/^\[\d+ files left out for length;.* and \d+ more\]$/);
    expect(note.length).toBeLessThanOrEqual(MAX_LEFT_OUT_NOTE_CHARS);
    const shown = (systemPrompt.match(/<file path=/g) ?? []).length;
    expect(shown).toBeGreaterThan(0);
    expect(note).toContain(`[${1000 - shown} files left out`);
    // The budget is half of maxChars; the header and a newline between blocks come on top.
    const header = prompt([{ path: 'a', content: '' }]).systemPrompt.indexOf('<file');
    expect(systemPrompt.length - header).toBeLessThanOrEqual(20_000 + shown + 1);
  });
});

describe("the target's manifest in every prompt", () => {
  // The model adds a package by rewriting the manifest whole: it must see what the manifest holds,
  // even when that is the template's content, which the system prompt only names.
  const version = (template: Record<string, string>, changes: Record<string, string>) =>
    Object.entries({ ...template, ...changes }).map(([path, content]) => ({ path, content }));
  const turns = [
    { role: 'USER' as const, content: 'An app' },
    { role: 'MODEL' as const, content: 'Here it is.' },
  ];

  it.each([
    ['WEB', 'package.json', 'src/App.tsx'],
    ['FLUTTER', 'pubspec.yaml', 'lib/main.dart'],
  ] as const)('%s shows %s whole in the first prompt and in a follow-up that left it as the template has it', (name, manifest, app) => {
    const target = getTarget(name);
    const template = target.template[manifest]!;
    const input = { systemPrompt: target.systemPrompt, template: target.template, manifest: target.manifest, turns: [], prompt: 'Add a package' };

    const first = buildPrompt({ ...input, parentFiles: [] }).systemPrompt;
    expect(first).toBe(`${target.systemPrompt}\n\n# Current files\nThe project's files as the template has them:\n${block(manifest, template)}`);

    const followUp = buildPrompt({ ...input, turns, parentFiles: version(target.template, { [app]: APP }) }).systemPrompt;
    expect(followUp.startsWith(target.systemPrompt)).toBe(true);
    expect(followUp).toContain(`# Current files\nThe project's files as the previous generation left them:\n${block(manifest, template)}\n${block(app, APP)}`);
    // The other template files, unchanged, stay names in the system prompt.
    for (const path of Object.keys(target.template).filter((path) => path !== manifest)) expect(followUp).not.toContain(`<file path="${path}">`);
    expect(target.manifest).toBe(manifest);
  });

  it.each(['WEB', 'FLUTTER'] as const)('%s shows the manifest as the parent left it, once, and before files that could fill the budget', (name) => {
    const target = getTarget(name);
    const manifest = `${target.template[target.manifest]!}\n`;
    // Files past the budget (200,000 here), the first of which fits the room left beside the note
    // alone but not with the manifest: shown first, the manifest is never the one left out.
    const room = 200_000 - MAX_LEFT_OUT_NOTE_CHARS;
    const filler = 'x'.repeat(room - block(target.manifest, manifest).length + 1 - block('assets/data.txt', '').length);
    const parentFiles = [
      { path: 'assets/data.txt', content: filler },
      ...version(target.template, { [target.manifest]: manifest }),
      { path: 'assets/more.txt', content: 'y'.repeat(MAX_LEFT_OUT_NOTE_CHARS) },
    ];
    const { systemPrompt } = buildPrompt({ systemPrompt: target.systemPrompt, template: target.template, manifest: target.manifest, parentFiles, turns, prompt: 'Add a package', maxChars: 400_000 });
    expect(systemPrompt).toContain(`left them:\n${block(target.manifest, manifest)}\n<file path="assets/more.txt">`);
    expect(systemPrompt).toMatch(/\[1 file left out for length;[^\]]*: assets\/data\.txt\]$/);
    expect(systemPrompt.split(`<file path="${target.manifest}">`)).toHaveLength(2);
  });
});

describe('the files of a fix request', () => {
  const error = (path: string): Diagnostic => ({ tool: 'tsc', severity: 'ERROR', path, line: 1, column: 1, code: 'TS2322', message: 'Type mismatch.' });
  const failed = (paths: string[]) => ({ ok: false as const, step: 'typecheck', failure: new RunFailure('BUILD_FAILED', 'tsc failed'), diagnostics: paths.map(error) });

  it('skips a file too big to show, shows the ones after it and names the one it left out', () => {
    const files = new Map([
      ['src/data.ts', BIG],
      ['src/App.tsx', APP],
      ['src/store.ts', STORE],
    ]);
    const request = fixRequest(failed(['src/data.ts', 'src/App.tsx', 'src/store.ts']), files, 1, 3);

    expect(request).toContain(block('src/App.tsx', APP));
    expect(request).toContain(block('src/store.ts', STORE));
    expect(request).not.toContain('<file path="src/data.ts">');
    expect(request).toMatch(/\[1 file left out for length;[^\]]*src\/data\.ts\]/);
  });
});
