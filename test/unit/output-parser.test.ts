import { describe, expect, it } from 'vitest';
import {
  MAX_FILE_BYTES,
  MAX_OUTPUT_FILES,
  OutputProtocolError,
  createOutputParser,
  fileBlocks,
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
    const content = `</filed> </file x> </ file> </file${' '.repeat(100)}> </FILE> </File >\n`;
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

// Forms that smaller and OpenAI-compatible models write instead of the canonical one: each
// must give the file (or fail the run with a message), never lose it without a word. Tag names
// stay lower case: `<File path="…">` and `</File>` are JSX, in prose or in a file.
const APP_TSX = `export const App = () => <div title="a > b" data-x='y'>Hi</div>;
`;

const FORMS = `Here is the app, in <file> blocks (see <file …> and <FILE/>).

<file path='src/App.tsx'>
${APP_TSX}</file>
<file path="src/a.ts" language="ts">
a
</file >
<file language='typescript' path="src/b.ts" description="the b > module, it's small">
b <File path="x">a JSX element</File> </FILE>
</file>
<file PATH="src/c.ts">
c
</file
\t>
<file\tpath='src/d.ts'\r\n  data-x="it's" >d</file>
<delete path='old/one.ts' />
<delete reason="unused" path="old/two.ts"/>
<delete path="old/three.ts" note='x > y'/>
<file path="src/e.ts">e</file>
That's all; </FILE>, <File path="a.tsx">x</File>, <Delete fontSize="small" /> and <delete /> here are prose.`;

const FORMS_EXPECTED: OutputEvent[] = [
  { type: 'file', path: 'src/App.tsx', content: APP_TSX },
  { type: 'file', path: 'src/a.ts', content: 'a\n' },
  { type: 'file', path: 'src/b.ts', content: 'b <File path="x">a JSX element</File> </FILE>\n' },
  { type: 'file', path: 'src/c.ts', content: 'c\n' },
  { type: 'file', path: 'src/d.ts', content: 'd' },
  { type: 'delete', path: 'old/one.ts' },
  { type: 'delete', path: 'old/two.ts' },
  { type: 'delete', path: 'old/three.ts' },
  { type: 'file', path: 'src/e.ts', content: 'e' },
];

describe('tag forms models write', () => {
  it('reads single quotes and other attributes, whatever two chunks the answer is split into', () => {
    expect(parse([FORMS])).toEqual(FORMS_EXPECTED);
    expect(parse([...FORMS])).toEqual(FORMS_EXPECTED);
    for (let at = 0; at <= FORMS.length; at += 1) {
      expect(parse([FORMS.slice(0, at), FORMS.slice(at)]), `split at ${at}`).toEqual(FORMS_EXPECTED);
    }
  });

  it.each([
    ["<file path='src/App.tsx'>x</file>", { type: 'file', path: 'src/App.tsx', content: 'x' }],
    ['<file path="x.ts" language="ts">x</file>', { type: 'file', path: 'x.ts', content: 'x' }],
    ['<file language="ts" path="x.ts">x</file>', { type: 'file', path: 'x.ts', content: 'x' }],
    ['<file path = "x.ts" lang =\'ts\'>x</file>', { type: 'file', path: 'x.ts', content: 'x' }],
    ["<file title='a > b' path=\"x.ts\" note=\"it's > that\">x</file>", { type: 'file', path: 'x.ts', content: 'x' }],
    ['<file Path="x.ts">x</file  >', { type: 'file', path: 'x.ts', content: 'x' }],
    ["<delete path='x.ts' />", { type: 'delete', path: 'x.ts' }],
    ['<delete kind="file" path="x.ts" why=\'unused\'/>', { type: 'delete', path: 'x.ts' }],
    ['<delete path="x.ts">', { type: 'delete', path: 'x.ts' }],
    ['<delete path="x.ts"></delete>', { type: 'delete', path: 'x.ts' }],
  ] as [string, OutputEvent][])('reads %s at every split', (output, event) => {
    for (let at = 0; at <= output.length; at += 1) {
      expect(parse([output.slice(0, at), output.slice(at)]), `split at ${at}`).toEqual([event]);
    }
  });

  it('keeps reading the canonical forms as before, in an answer that mixes them with the others', () => {
    const mixed = `${OUTPUT}\n${FORMS}`;
    const expected = [...EXPECTED, ...FORMS_EXPECTED];
    expect(parse([mixed])).toEqual(expected);
    expect(parse([...mixed])).toEqual(expected);
  });

  it('finds the same blocks for a later prompt as the parser writes', () => {
    const paths = [...fileBlocks(FORMS)].map((block) => block.path);
    expect(paths).toEqual(FORMS_EXPECTED.filter((event) => event.type === 'file').map((event) => event.path));
  });

  it('leaves prose that only mentions tags as prose, however it is chunked', () => {
    const prose =
      'Use <file> or <FILE> or <file …> or <file path> or <file path=x.ts> or <File/> or <file > ' +
      'or <delete /> or <file path="a"/> or <delete path="a"/ > or <files path="a"> or <file a="1"b="2"> or <file a="1" b> ' +
      'or </FILE> or <file\u00a0path="a"> or <file name="x.ts"> or <delete dir="build"/> or <file accept=\'image/*\'> ' +
      'or <FILE path="a.ts"> or <File path="a.ts">x</File> or <Delete fontSize="small" /> or <DELETE path="a"/> freely.';
    for (let at = 0; at <= prose.length; at += 1) {
      expect(parse([prose.slice(0, at), prose.slice(at)]), `split at ${at}`).toEqual([]);
    }
  });

  it.each([
    ['<file path="a.ts" path="b.ts">x</file>', 'a <file> tag with more than one path attribute: "<file path="a.ts" path="b.ts">"'],
  ])('fails with INVALID_OUTPUT naming %s, at every split', (tag, problem) => {
    const output = `Here it is:\n${tag}\nDone.`;
    for (let at = 0; at <= output.length; at += 1) {
      const error = catchError(() => parse([output.slice(0, at), output.slice(at)]));
      expect(error, `split at ${at}`).toBeInstanceOf(OutputProtocolError);
      expect(error).toMatchObject({ code: 'INVALID_OUTPUT', message: `The model's output has ${problem}` });
    }
  });

  it('fails with INVALID_OUTPUT on a tag whose other attributes make it too long to hold, however it is chunked', () => {
    const output = `<file path="a.ts" description="${'x'.repeat(400)}">x</file>`;
    for (const chunks of [[output], [...output]]) {
      const error = catchError(() => parse(chunks));
      expect(error).toBeInstanceOf(OutputProtocolError);
      expect((error as Error).message).toMatch(/^The model's output has a <file> tag longer than \d+ characters: "<file path="a.ts" description="xxx/);
    }
    // A path that runs past the limit is still an unsafe path, wherever it stands in the tag.
    expect(() => parse([`<file lang='ts' path='${'a'.repeat(1000)}'>x</file>`])).toThrow(/longer than 255 characters/);
    // Without a path, a long tag is prose (JSX a model shows, say).
    expect(parse([`<file description="${'x'.repeat(400)}">x</file>`])).toEqual([]);
    expect(() => parse([...`<delete why="old" path="${'a'.repeat(1000)}"/>`])).toThrow(UnsafeOutputError);
  });

  it('fails with INVALID_OUTPUT when the output ends inside a tag or block of another form', () => {
    expect(() => parse(["<file path='a.ts'>x"])).toThrow(`The model's output ended inside "a.ts"`);
    expect(() => parse(['<file language="ts" path=\'src/a'])).toThrow(`The model's output ended inside the tag of "src/a"`);
    expect(() => parse(['<file path="a.ts" language="t'])).toThrow(`The model's output ended inside the tag of "a.ts"`);
    // Before its path has begun, the end of the output is the end of prose.
    expect(parse(['Use <file'])).toEqual([]);
    expect(parse(['Use <file lang'])).toEqual([]);
    expect(parse(['<delete reason="old'])).toEqual([]);
    expect(parse(['<file a="1" '])).toEqual([]);
  });

  it.each([
    ["<file path='../x'>x</file>", '../x'],
    ['<file lang="ts" path="/etc/passwd">x</file>', '/etc/passwd'],
    ["<delete path='a\\b' />", 'a\\b'],
    ['<delete path="" note="x"/>', ''],
  ])('refuses the unsafe path of %s with UNSAFE_OUTPUT', (output, path) => {
    const error = catchError(() => parse([output]));
    expect(error).toBeInstanceOf(UnsafeOutputError);
    expect(error).toMatchObject({ code: 'UNSAFE_OUTPUT', path });
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
    ['lib/main.dart.', '"lib/main.dart."'],
    ['lib.../a.dart', '"lib.../a.dart"'],
    ['lib/con.dart', '"lib/con.dart"'],
    ['web/NUL', '"web/NUL"'],
    ['Aux/x.ts', '"Aux/x.ts"'],
    ['lib/com1.txt', '"lib/com1.txt"'],
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
      'lib/console.dart',
      'lib/null.ts',
      'src/auxiliary/com.ts',
      '.github/workflows/ci.yml',
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
