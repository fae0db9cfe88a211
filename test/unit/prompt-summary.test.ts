import { describe, expect, it } from 'vitest';
import { MAX_WHOLE_ANSWERS_CHARS, fixRequest, ownAnswers } from '../../src/generations/fix-rounds.js';
import { createOutputParser } from '../../src/generations/output-parser.js';
import { buildPrompt, summariseFiles } from '../../src/generations/prompt.js';
import { RunFailure } from '../../src/generations/run-failure.js';

// An earlier answer in a later prompt keeps what it did, not the files it wrote (those are in
// "Current files"): every block the output parser reads is shortened, whatever its tags look like.

const SECRET = 'const secret = "FILE BODY";\n';

describe('summariseFiles', () => {
  it('shortens every block the parser reads, whitespace in its tags or not', () => {
    const answer = [
      'Here you go.\n',
      `<file path="a.ts">\n${SECRET}</file>\n`,
      `<file path="b.ts" >\n${SECRET}</file>\n`,
      `<file\npath="c.ts"\n>\n${SECRET}</file >\n`,
      `<file\r\n\tpath="d.ts"\r\n>\r\n${SECRET}</file\r\n>\r\n`,
      '<delete path="old.ts"/>\n',
      'Done.',
    ].join('');
    const parser = createOutputParser();
    const written = [...parser.push(answer), ...parser.end()].filter((event) => event.type === 'file').map((event) => event.path);
    expect(written).toEqual(['a.ts', 'b.ts', 'c.ts', 'd.ts']);

    expect(summariseFiles(answer)).toBe(
      'Here you go.\n[wrote a.ts]\n[wrote b.ts]\n[wrote c.ts]\n[wrote d.ts]\r\n<delete path="old.ts"/>\nDone.',
    );
  });

  it('leaves out the file bodies of an earlier answer in the next prompt', () => {
    const { messages } = buildPrompt({
      systemPrompt: 'SYSTEM',
      template: {},
      manifest: 'package.json',
      parentFiles: [],
      turns: [
        { role: 'USER', content: 'An app' },
        { role: 'MODEL', content: `Sure.\n<file\npath="src/App.tsx"\n>\n${SECRET}</file >\n<file path="src/b.ts" >\n${SECRET}</file>\n` },
      ],
      prompt: 'Add a button',
    });
    expect(messages.map((message) => message.content)).toEqual(['An app', 'Sure.\n[wrote src/App.tsx]\n[wrote src/b.ts]\n', 'Add a button']);
  });

  it('ends a block where the parser does, and keeps one left open as it is', () => {
    // The first closing tag ends a block, as in the parser; an opening tag inside a block is its content.
    expect(summariseFiles('<file path="a.md">\nuse <file path="b">..</file> blocks\n</file>')).toBe('[wrote a.md] blocks\n</file>');
    expect(summariseFiles('<file path="a.ts">\nx\n</file>\n<file path="b.ts">\ncut off')).toBe('[wrote a.ts]\n<file path="b.ts">\ncut off');
    expect(summariseFiles('Use <file> or </file> or <file path="a"/> freely.')).toBe('Use <file> or </file> or <file path="a"/> freely.');
  });

  it('reads an answer of many openings that never close, in one pass', () => {
    // Each opening once searched to the end for its closing tag would take minutes here.
    const answer = '<file path="x">'.repeat(200_000);
    expect(summariseFiles(answer)).toBe(answer);
    const closedLast = `${'<file path="x">\n'.repeat(200_000)}</file>`;
    expect(summariseFiles(closedLast)).toBe('[wrote x]');
  });
});

describe("a fix round's view of this generation's answers (ownAnswers)", () => {
  it('shows them whole, file bodies included, and summarised only past what a prompt gives files', () => {
    const answer = `Here you go.\n<file path="lib/items.dart">\n${SECRET}</file>\n`;
    expect(ownAnswers(answer)).toBe(answer);
    const long = `${answer}<file path="lib/big.dart">\n${'x'.repeat(MAX_WHOLE_ANSWERS_CHARS)}\n</file>\n`;
    expect(ownAnswers(long)).toBe('Here you go.\n[wrote lib/items.dart]\n[wrote lib/big.dart]\n');
  });
});

describe("a fix round's request (fixRequest)", () => {
  it('asks for file blocks in words a model can repeat in its prose without writing a file', () => {
    const diagnostic = { tool: 'tsc', severity: 'ERROR' as const, path: 'src/a.ts', line: 1, column: 1, code: 'TS2322', message: 'Wrong type.' };
    const failed = { ok: false as const, step: 'typecheck', failure: new RunFailure('BUILD_FAILED', 'tsc failed'), diagnostics: [diagnostic] };
    const request = fixRequest(failed, new Map([['src/a.ts', 'export const a: number = "x";\n']]), 1, 2);
    const instruction = request.slice(request.lastIndexOf('</file>') + '</file>'.length);
    expect(instruction).toMatch(/whole new content/);
    const parser = createOutputParser();
    expect([...parser.push(`Sure. ${instruction}\n`), ...parser.end()]).toEqual([]);
  });
});
