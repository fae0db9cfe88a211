import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildEnv, runStep } from '../../src/toolchain/step-runner.js';
import { commandLine, getTarget, toolNames, type BuildStepSpec } from '../../src/toolchain/targets.js';

const sampleFlutterApp = `import 'package:flutter/material.dart';

void main() => runApp(const MaterialApp(home: Scaffold(body: Center(child: Text('Hello')))));
`;

let workspace: string;
beforeEach(async () => {
  workspace = await mkdtemp(join(tmpdir(), 'kiln-target-'));
});
afterEach(async () => {
  await rm(workspace, { recursive: true, force: true });
});

async function writeFiles(files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(workspace, path)), { recursive: true });
    await writeFile(join(workspace, path), content);
  }
}

describe('WEB target', () => {
  const web = getTarget('WEB');

  it('is a Vite + React + TypeScript project without the React plugin', () => {
    const pkg = JSON.parse(web.template['package.json']!);
    expect(Object.keys(pkg.dependencies).sort()).toEqual(['react', 'react-dom']);
    expect(pkg.devDependencies).toMatchObject({ vite: expect.stringMatching(/^\^6\./), typescript: expect.any(String) });
    expect(pkg.devDependencies).toHaveProperty('@types/react');
    expect(pkg.devDependencies).toHaveProperty('@types/react-dom');
    expect(JSON.stringify(web.template)).not.toContain('@vitejs/plugin-react');

    const { compilerOptions } = JSON.parse(web.template['tsconfig.json']!);
    expect(compilerOptions).toMatchObject({ jsx: 'react-jsx', strict: true, noEmit: true, moduleResolution: 'bundler' });
  });

  it('renders the default export of src/App.tsx, which the model writes, into #root', () => {
    expect(web.template['index.html']).toContain('<div id="root"></div>');
    expect(web.template['index.html']).toContain('src="/src/main.tsx"');
    expect(web.template['src/main.tsx']).toContain("import App from './App';");
    expect(web.template['src/main.tsx']).toContain("getElementById('root')");
    expect(web.template).not.toHaveProperty('src/App.tsx');
    expect(web.systemPrompt).toContain('src/App.tsx');
  });

  it('installs, typechecks and builds with npm', () => {
    expect(web.steps.map((step) => [step.name, commandLine(step, toolNames)])).toEqual([
      ['install', 'npm install --ignore-scripts --no-package-lock --no-audit --no-fund'],
      ['typecheck', 'npm exec -- tsc --noEmit --pretty false'],
      ['build', 'npm exec -- vite build --base ./'],
    ]);
  });
});

describe('FLUTTER target', () => {
  const flutter = getTarget('FLUTTER');

  it('is a web-enabled Flutter package named kiln_app whose lib/main.dart the model writes', () => {
    const pubspec = flutter.template['pubspec.yaml']!;
    expect(pubspec).toMatch(/^name: kiln_app$/m);
    expect(pubspec).toMatch(/^environment:\n {2}sdk: ">=3\.\d+\.\d+ <4\.0\.0"$/m);
    expect(pubspec).toMatch(/^dependencies:\n {2}flutter:\n {4}sdk: flutter$/m);
    expect(flutter.template).toHaveProperty('analysis_options.yaml');
    expect(flutter.template['web/index.html']).toContain('flutter_bootstrap.js');
    expect(JSON.parse(flutter.template['web/manifest.json']!)).toMatchObject({ name: 'kiln_app' });
    expect(flutter.template).not.toHaveProperty('lib/main.dart');
    expect(flutter.systemPrompt).toContain('lib/main.dart');
  });

  it('gets packages, analyzes and builds for the web', () => {
    expect(flutter.steps.map((step) => [step.name, commandLine(step, toolNames)])).toEqual([
      ['install', 'flutter pub get'],
      ['analyze', 'flutter analyze --no-fatal-infos --machine'],
      ['build', 'flutter build web'],
    ]);
  });

  it('builds the template plus a sample app with every step, using FLUTTER_BIN as given', async () => {
    const bins = { ...toolNames, flutter: fileURLToPath(new URL('../fixtures/bin/flutter', import.meta.url)) };
    await writeFiles({ ...flutter.template, 'lib/main.dart': sampleFlutterApp });

    for (const step of flutter.steps) {
      const result = await runStep({
        command: bins[step.tool],
        args: step.args,
        cwd: workspace,
        env: buildEnv({ FAKE_FLUTTER_MODE: 'ok' }),
        timeoutMs: 30_000,
        onLine: () => {},
      });
      expect(result, step.name).toMatchObject({ status: 'SUCCEEDED' });
    }
    expect(existsSync(join(workspace, 'build/web/index.html'))).toBe(true);
  });
});

describe('system prompts', () => {
  it.each(['FLUTTER', 'WEB'] as const)('%s states the whole-file output protocol and the template files', (name) => {
    const target = getTarget(name);
    expect(target.systemPrompt).toContain('<file path="relative/path">');
    expect(target.systemPrompt).toContain('</file>');
    expect(target.systemPrompt).toContain('<delete path="relative/path"/>');
    expect(target.systemPrompt).toMatch(/whole file/i);
    for (const path of Object.keys(target.template)) expect(target.systemPrompt).toContain(`- ${path}`);
    for (const step of target.steps) expect(target.systemPrompt).toContain(commandLine(step, toolNames));
  });
});

describe('commandLine', () => {
  it('shows the configured binary and quotes arguments a reader could misread', () => {
    const step: BuildStepSpec = { name: 'build', tool: 'flutter', args: ['build', 'web', '--dart-define=TITLE=My app'] };
    expect(commandLine(step, { ...toolNames, flutter: '/opt/flutter/bin/flutter' })).toBe(
      "/opt/flutter/bin/flutter build web '--dart-define=TITLE=My app'",
    );
  });
});
