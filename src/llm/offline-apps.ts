// Source templates of the offline provider's apps. Prompt text only ever enters
// them through the literal escapers below, so no prompt can break the code or
// the surrounding <file> protocol.

/** What the generated app shows, derived from the user's prompt. */
export interface AppBrief {
  title: string;
  /** The prompt itself, tidied for display. */
  request: string;
  checklist: string[];
  /** #rrggbb, stable per prompt, so different prompts give visibly different apps. */
  accent: string;
  /** The prompt asked for a broken build (the self-healing demonstration): the code fails its checker. */
  buildError?: boolean;
}

/** A prompt containing this asks the offline provider for code that fails the build (then its fix). */
export const BUILD_ERROR_REQUEST = /with a build error/i;
/** Marks the line of the deliberate error in the generated code (the fake flutter of the tests reports it). */
export const BUILD_ERROR_MARKER = 'deliberate build error';

const TITLE_LENGTH = 48;
const REQUEST_LENGTH = 600;
const ITEM_LENGTH = 60;
const MAX_ITEMS = 6;

export function describePrompt(prompt: string): AppBrief {
  const request = truncate(tidy(prompt).trim(), REQUEST_LENGTH) || 'An app made with Kiln';
  const firstLine = request.split('\n').find((line) => line.trim()) ?? '';
  const core = collapse(firstLine)
    .replace(/^(please\s+)?(build|make|create|generate|write|design|give)\s+(me\s+)?(an?\s+|the\s+)?/i, '')
    .replace(/[\s.!?]+$/, '');
  return {
    title: capitalize(truncate(core, TITLE_LENGTH)) || 'My App',
    request,
    checklist: checklistOf(request),
    accent: accentFor(request),
  };
}

/** The request's parts ("a timer, dark mode and sounds") as distinct checklist items. */
function checklistOf(request: string): string[] {
  const items = new Map<string, string>();
  for (const part of request.split(/[,;\n]|\.\s|\s(?:and|with|plus)\s/i)) {
    const item = capitalize(truncate(collapse(part).replace(/[\s.!?]+$/, ''), ITEM_LENGTH));
    if (item.length > 1 && !items.has(item.toLowerCase())) items.set(item.toLowerCase(), item);
  }
  const distinct = [...items.values()].slice(0, MAX_ITEMS);
  return distinct.length > 0 ? distinct : ['Describe what to build next'];
}

export function webApp({ title, request, checklist, accent, buildError }: AppBrief): string {
  const broken = buildError ? `export const itemCount: number = 'every item'; // A ${BUILD_ERROR_MARKER}, as the prompt asked.\n` : '';
  return `import { useState } from 'react';

const title = ${tsString(title)};
const request = ${tsString(request)};
const checklist: string[] = [${checklist.map(tsString).join(', ')}];
${broken}
const styles = \`
  .app { max-width: 40rem; margin: 0 auto; padding: 2rem 1rem; font-family: system-ui, sans-serif; color: #1f2328; }
  .app h1 { color: ${accent}; margin-bottom: 0.25rem; }
  .request { white-space: pre-wrap; color: #57606a; }
  .checklist { list-style: none; padding: 0; }
  .checklist li { padding: 0.5rem 0; border-bottom: 1px solid #d0d7de; }
  .checklist .done { text-decoration: line-through; color: #8c959f; }
\`;

export default function App() {
  const [done, setDone] = useState<boolean[]>(() => checklist.map(() => false));
  const finished = done.filter(Boolean).length;

  function toggle(index: number) {
    setDone((current) => current.map((value, i) => (i === index ? !value : value)));
  }

  return (
    <main className="app">
      <style>{styles}</style>
      <h1>{title}</h1>
      <p className="request">{request}</p>
      <h2>
        Checklist ({finished}/{checklist.length})
      </h2>
      <ul className="checklist">
        {checklist.map((item, index) => (
          <li key={item} className={done[index] ? 'done' : undefined}>
            <label>
              <input type="checkbox" checked={done[index] ?? false} onChange={() => toggle(index)} /> {item}
            </label>
          </li>
        ))}
      </ul>
    </main>
  );
}
`;
}

export function flutterApp({ title, request, checklist, accent, buildError }: AppBrief): string {
  const broken = buildError ? `const int itemCount = 'every item'; // A ${BUILD_ERROR_MARKER}, as the prompt asked.\n` : '';
  return `import 'package:flutter/material.dart';

const String appTitle = ${dartString(title)};
const String userRequest = ${dartString(request)};
const List<String> checklist = <String>[
${checklist.map((item) => `  ${dartString(item)},\n`).join('')}];
${broken}
void main() {
  runApp(const GeneratedApp());
}

class GeneratedApp extends StatelessWidget {
  const GeneratedApp({super.key});

  @override
  Widget build(BuildContext context) {
    return MaterialApp(
      title: appTitle,
      debugShowCheckedModeBanner: false,
      theme: ThemeData(
        colorScheme: ColorScheme.fromSeed(seedColor: const Color(0xFF${accent.slice(1).toUpperCase()})),
      ),
      home: const ChecklistPage(),
    );
  }
}

class ChecklistPage extends StatefulWidget {
  const ChecklistPage({super.key});

  @override
  State<ChecklistPage> createState() => _ChecklistPageState();
}

class _ChecklistPageState extends State<ChecklistPage> {
  final Set<int> _done = <int>{};

  void _toggle(int index) {
    setState(() {
      if (!_done.remove(index)) {
        _done.add(index);
      }
    });
  }

  @override
  Widget build(BuildContext context) {
    final ThemeData theme = Theme.of(context);
    return Scaffold(
      appBar: AppBar(
        title: const Text(appTitle),
        backgroundColor: theme.colorScheme.inversePrimary,
      ),
      body: ListView(
        padding: const EdgeInsets.all(16),
        children: <Widget>[
          Text(userRequest, style: theme.textTheme.bodyLarge),
          const SizedBox(height: 16),
          Text(
            'Checklist (\${_done.length}/\${checklist.length})',
            style: theme.textTheme.titleMedium,
          ),
          for (int index = 0; index < checklist.length; index++)
            CheckboxListTile(
              value: _done.contains(index),
              onChanged: (_) => _toggle(index),
              title: Text(checklist[index]),
            ),
        ],
      ),
    );
  }
}
`;
}

/** A TypeScript string literal; `<` is escaped so the text can never form a </file> tag. */
function tsString(value: string): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

const DART_ESCAPES: Record<string, string> = {
  '\\': '\\\\',
  "'": "\\'",
  $: '\\$',
  '<': '\\u003C',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

/** A single-quoted Dart string literal: no interpolation, no raw `<`, no raw control characters. */
function dartString(value: string): string {
  const escaped = value.replace(
    /[\\'$<\u0000-\u001f\u007f\u2028\u2029]/g,
    (ch) => DART_ESCAPES[ch] ?? `\\u{${ch.charCodeAt(0).toString(16)}}`,
  );
  return `'${escaped}'`;
}

/** Well-formed text with Unix newlines and no invisible control characters. */
function tidy(text: string): string {
  return text
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
    .replace(/\r\n?/g, '\n')
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '');
}

function collapse(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** Shortens by code points, so an emoji is never cut in half. */
function truncate(text: string, max: number): string {
  const points = Array.from(text);
  return points.length <= max ? text : `${points.slice(0, max - 1).join('').trimEnd()}…`;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function accentFor(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hslToHex((hash >>> 0) % 360, 0.55, 0.42);
}

function hslToHex(hue: number, saturation: number, lightness: number): string {
  const a = saturation * Math.min(lightness, 1 - lightness);
  const channel = (n: number) => {
    const k = (n + hue / 30) % 12;
    const value = lightness - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(value * 255)
      .toString(16)
      .padStart(2, '0');
  };
  return `#${channel(0)}${channel(8)}${channel(4)}`;
}
