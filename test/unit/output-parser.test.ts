import { describe, expect, it } from 'vitest';
import {
  MAX_FILE_BYTES,
  MAX_OUTPUT_FILES,
  OutputProtocolError,
  createOutputParser,
  type OutputEvent,
} from '../../src/generations/output-parser.js';
import { UnsafeOutputError, assertSafeRelativePath } from '../../src/generations/safe-path.js';

function parse(chunks: string[]): OutputEvent[] {
  const parser = createOutputParser();
  return [...chunks.flatMap((chunk) => parser.push(chunk)), ...parser.end()];
}

const MAIN_DART = `import 'package:flutter/material.dart';

void main() => runApp(const App());

class App extends StatelessWidget {
  const App({super.key});
  @override
  Widget build(BuildContext context) => MaterialApp(home: Text(1 < 2 ? 'a <b> c' : '</fil'));
}
`;

const OUTPUT = `Sure! Here is a counter app with "quotes" and a < sign in prose.

<file path="lib/main.dart">
${MAIN_DART}</file>

Then the pubspec:
<file path="pubspec.yaml">name: counter
description: Täglich zählen 🍵
</file>
<delete path="lib/old_widget.dart"/>
<delete  path="test/widget_test.dart" />
<file path="web/index.html">
<!doctype html><html><body><file path="not/a/tag.txt">inner text</body></html>
</file>
That's all.`;

const EXPECTED: OutputEvent[] = [
  { type: 'file', path: 'lib/main.dart', content: MAIN_DART },
  { type: 'file', path: 'pubspec.yaml', content: 'name: counter\ndescription: Täglich zählen 🍵\n' },
  { type: 'delete', path: 'lib/old_widget.dart' },
  { type: 'delete', path: 'test/widget_test.dart' },
  {
    type: 'file',
    path: 'web/index.html',
    content: '<!doctype html><html><body><file path="not/a/tag.txt">inner text</body></html>\n',
  },
];

describe('output parser', () => {
  it('reads files, deletes and prose from one chunk', () => {
    expect(parse([OUTPUT])).toEqual(EXPECTED);
  });

  it('gives the same result whatever two chunks the output is split into', () => {
    for (let at = 0; at <= OUTPUT.length; at += 1) {
      expect(parse([OUTPUT.slice(0, at), OUTPUT.slice(at)]), `split at ${at}`).toEqual(EXPECTED);
    }
  });

  it('gives the same result from one-character chunks and from random chunk sizes', () => {
    expect(parse([...OUTPUT])).toEqual(EXPECTED);
    let seed = 7;
    for (let round = 0; round < 50; round += 1) {
      const chunks: string[] = [];
      for (let at = 0; at < OUTPUT.length; ) {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        const size = 1 + (seed % 40);
        chunks.push(OUTPUT.slice(at, at + size));
        at += size;
      }
      expect(parse(chunks)).toEqual(EXPECTED);
    }
  });

  it('returns each file as soon as its closing tag arrives', () => {
    const parser = createOutputParser();
    expect(parser.push('<file path="a.txt">one')).toEqual([]);
    expect(parser.push('</fi')).toEqual([]);
    expect(parser.push('le> and <file path="b.txt">')).toEqual([{ type: 'file', path: 'a.txt', content: 'one' }]);
    expect(parser.push('two</file>')).toEqual([{ type: 'file', path: 'b.txt', content: 'two' }]);
    expect(parser.end()).toEqual([]);
  });

  it('ends a block at a closing tag with whitespace before its `>`, so the files after it are written, however it is chunked', () => {
    const output = '<file path="a.ts">\r\nx\r\n</file >\r\n<file\r\npath="b.ts"\r\n>\r\ny\r\n</file\r\n\t>\n<file path="c.ts">\nz\n</file>';
    const expected: OutputEvent[] = [
      { type: 'file', path: 'a.ts', content: 'x\r\n' },
      { type: 'file', path: 'b.ts', content: 'y\r\n' },
      { type: 'file', path: 'c.ts', content: 'z\n' },
    ];
    expect(parse([output])).toEqual(expected);
    expect(parse([...output])).toEqual(expected);
    for (let at = 0; at <= output.length; at += 1) {
      expect(parse([output.slice(0, at), output.slice(at)]), `split at ${at}`).toEqual(expected);
    }
    // A closing tag split after its whitespace still closes the block when its `>` comes.
    const parser = createOutputParser();
    expect(parser.push('<file path="a.ts">x</file  ')).toEqual([]);
    expect(parser.push('>')).toEqual([{ type: 'file', path: 'a.ts', content: 'x' }]);
  });

  it('keeps in the file what only looks like a closing tag', () => {
    const content = `</filed> </file x> </ file> </file${' '.repeat(100)}> </FILE>\n`;
    expect(parse([`<file path="a.ts">${content}</file>`])).toEqual([{ type: 'file', path: 'a.ts', content }]);
    expect(parse([...`<file path="a.ts">${content}</file>`])).toEqual([{ type: 'file', path: 'a.ts', content }]);
    // An output that ends inside a closing tag ended inside its block.
    expect(() => parse(['<file path="a.ts">x</file '])).toThrow(OutputProtocolError);
  });

  it('strips only one newline after the opening tag and keeps the rest verbatim', () => {
    expect(parse(['<file path="a.txt">\n\n  x\n</file>'])).toEqual([
      { type: 'file', path: 'a.txt', content: '\n  x\n' },
    ]);
    expect(parse(['<file path="a.txt">', '\r', '\nx</file>'])).toEqual([{ type: 'file', path: 'a.txt', content: 'x' }]);
    expect(parse(['<file path="empty.txt"></file>'])).toEqual([{ type: 'file', path: 'empty.txt', content: '' }]);
  });

  it('ignores prose that only looks like tags', () => {
    expect(parse(['Use <filed> or <file> or <deleted path="x"/> or </file> freely. <file path="a"/>'])).toEqual([]);
  });

  it('fails with INVALID_OUTPUT when the output ends inside a block', () => {
    const parser = createOutputParser();
    parser.push('<file path="lib/main.dart">\nvoid main() {');
    const error = catchError(() => parser.end());
    expect(error).toBeInstanceOf(OutputProtocolError);
    expect(error).toMatchObject({ code: 'INVALID_OUTPUT' });
    expect((error as Error).message).toBe(`The model's output ended inside "lib/main.dart"`);
  });

  it('fails with INVALID_OUTPUT when the output ends inside an opening tag', () => {
    const parser = createOutputParser();
    parser.push('Here: <file path="lib/ma');
    expect(() => parser.end()).toThrow(OutputProtocolError);
  });
});

describe('unsafe paths', () => {
  const unsafe: [path: string, shown: string, label?: string][] = [
    ['..', '".."'],
    ['../x', '"../x"'],
    ['a/../../b', '"a/../../b"'],
    ['/etc/passwd', '"/etc/passwd"'],
    ['C:\\x', '"C:\\\\x"'],
    ['C:/x', '"C:/x"'],
    ['a\\b', '"a\\\\b"'],
    ['a\u0000b', '"a\\u{0}b"'],
    ['lib/\u202etxt.exe', '"lib/\\u{202e}txt.exe"'],
    ['lib\uff0fmain.dart', '"lib\\u{ff0f}main.dart"'],
    ['', '""'],
    ['./a', '"./a"'],
    ['a//b', '"a//b"'],
    ['a/', '"a/"'],
    ['lib/ma in.dart', '"lib/ma in.dart"'],
    ['x'.repeat(256), `"${'x'.repeat(100)}..."`, 'a path of 256 characters'],
    [Array.from({ length: 17 }, () => 'd').join('/'), '"d/d/d', 'a path 17 levels deep'],
  ];

  it.each(unsafe.map(([path, shown, label]) => [label ?? JSON.stringify(path), path, shown]))(
    'refuses %s and names it in the message',
    (_label, path, shown) => {
    const error = catchError(() => parse([`<file path="${path}">x</file>`]));
    expect(error).toBeInstanceOf(UnsafeOutputError);
    expect(error).toMatchObject({ code: 'UNSAFE_OUTPUT', path });
    expect((error as Error).message).toContain(shown);
    expect(() => parse([`<delete path="${path}"/>`])).toThrow(UnsafeOutputError);
    },
  );

  it('refuses a path too long to fit in the opening tag, however it is chunked', () => {
    const output = `<file path="${'a'.repeat(1000)}">x</file>`;
    expect(() => parse([output])).toThrow(UnsafeOutputError);
    expect(() => parse([...output])).toThrow(/longer than 255 characters/);
  });

  it('accepts ordinary paths at the limits', () => {
    for (const path of [
      'lib/main.dart',
      '@scope/pkg+extra/file-name_1.tsx',
      '.env.example',
      'a'.repeat(255),
      Array.from({ length: 16 }, () => 'd').join('/'),
    ]) {
      expect(() => assertSafeRelativePath(path)).not.toThrow();
    }
  });

  it('refuses the file that goes past the size and count limits', () => {
    const big = 'é'.repeat(MAX_FILE_BYTES / 2 + 1);
    expect(() => parse([`<file path="big.txt">${big}</file>`])).toThrow(/"big.txt" is larger than 1 MiB/);
    // An oversized block is refused while it streams, not only once it closes.
    const parser = createOutputParser();
    expect(() => parser.push(`<file path="big.txt">${'x'.repeat(MAX_FILE_BYTES + CLOSE_TAG_LENGTH)}`)).toThrow(
      UnsafeOutputError,
    );
    expect(parse([`<file path="max.txt">${'x'.repeat(MAX_FILE_BYTES)}</file>`])[0]).toMatchObject({ path: 'max.txt' });

    const almostMax = 'x'.repeat(MAX_FILE_BYTES - 1);
    const eleven = Array.from({ length: 11 }, (_, n) => `<file path="f${n}.txt">${almostMax}</file>`);
    expect(() => parse(eleven)).toThrow(/"f10.txt" brings the output past 10 MiB/);

    const many = Array.from({ length: MAX_OUTPUT_FILES + 1 }, (_, n) => `<delete path="f${n}.txt"/>`);
    expect(parse(many.slice(0, MAX_OUTPUT_FILES))).toHaveLength(MAX_OUTPUT_FILES);
    expect(() => parse(many)).toThrow(/"f200.txt" would make more than 200 files/);
  });
});

const CLOSE_TAG_LENGTH = '</file>'.length;

function catchError(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error('expected an error');
}
