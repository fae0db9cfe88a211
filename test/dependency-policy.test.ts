import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { probeBwrap } from '../src/toolchain/sandbox.js';
import { webTarget } from '../src/toolchain/web-target.js';
import { databaseKind } from './support/db.js';
import { BuildRoundsDocument } from './support/fix-rounds.js';
import { createProject } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import { type Generation, startAccepted, waitForEnd } from './support/generation-helpers.js';
import { useSdkFakes } from './support/hostile-project.js';
import { useStarted } from './support/lifecycle.js';

// The dependency fetch has the host's network, so a project must not choose where it
// fetches from: a dependency by URL, git or path, a lock file's `resolved` URL, an .npmrc
// a build step left behind, a pubspec source other than pub.dev. Each would make the
// server fetch from an internal address (here a tiny HTTP server standing in for
// PostgreSQL, cloud metadata or the API) into the workspace. The fake npm fetches every
// URL it finds, as a careless npm would, so the internal server counts what got through.
// With and without the sandbox: the policy is the same.

const bwrapProblem = await probeBwrap();
const sandboxes = bwrapProblem ? (['none'] as const) : (['none', 'bwrap'] as const);

/** The internal address: records every request it gets. */
async function startInternalServer(): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server: Server = createServer((request, response) => {
    requests.push(`${request.method} ${request.url}`);
    response.end('internal secret');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, requests, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

const fileBlocks = (files: Record<string, string>) =>
  Object.entries(files)
    .map(([path, content]) => `<file path="${path}">\n${content}</file>`)
    .join('\n');

const packageJson = (extra: Record<string, unknown>) => `${JSON.stringify({ ...(JSON.parse(webTarget.template['package.json']!) as object), ...extra }, null, 2)}\n`;

const pubspec = (dependencies: string) => `name: kiln_app
publish_to: none
environment:
  sdk: ">=3.4.0 <4.0.0"
dependencies:
  flutter:
    sdk: flutter
${dependencies}`;

describe.each(sandboxes)(`the dependency fetch with BUILD_SANDBOX=%s (${databaseKind})`, (sandbox) => {
  const sdks = useSdkFakes();
  const internal = useStarted(startInternalServer, (started) => started.close());
  const suite = useGeminiServer(() => ({ BUILD_SANDBOX: sandbox, ...sdks.kilnEnv, AUTO_FIX_MAX_ROUNDS: '1' }));

  async function generate(target: 'WEB' | 'FLUTTER', ...answers: Record<string, string>[]): Promise<Generation> {
    suite.gemini.script(...answers.map((files) => ({ kind: 'stream' as const, chunks: [`Here it is.\n${fileBlocks(files)}\n`], usage: { promptTokens: 10, outputTokens: 10 } })));
    const project = await createProject(suite.owner.client, { target });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'an app' });
    return waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id, 60_000);
  }

  function expectRefusedInstall(generation: Generation, ...mentions: string[]) {
    expect(generation.status).toBe('FAILED');
    expect(generation.error?.code).toBe('UNSAFE_OUTPUT');
    for (const text of mentions) expect(generation.error?.message).toContain(text);
    expect(generation.buildSteps.map((step) => [step.name, step.status])).toEqual([
      ['install', 'FAILED'],
      [generation.buildSteps[1]!.name, 'SKIPPED'],
      ['build', 'SKIPPED'],
    ]);
    expect(generation.buildLog.filter((line) => line.step === 'install').map((line) => line.text)).toEqual([expect.stringMatching(/^\[dependency policy\] /)]);
    expect(internal.requests).toEqual([]);
  }

  it.each([
    ['a tarball URL', (url: string) => ({ dependencies: { react: '^19.1.0', leak: `${url}/x.tgz` } }), '"leak"'],
    ['a git URL', (url: string) => ({ devDependencies: { leak: `git+${url}/leak.git` } }), '"leak"'],
    ['GitHub shorthand', () => ({ optionalDependencies: { leak: 'someone/leak' } }), '"leak"'],
    ['a file: path', () => ({ dependencies: { leak: 'file:../..' } }), '"leak"'],
    ['an alias to a URL', (url: string) => ({ dependencies: { leak: `npm:leak@${url}/x.tgz` } }), '"leak"'],
    ['an override with a URL', (url: string) => ({ overrides: { react: `${url}/react.tgz` } }), '"react"'],
  ])('refuses a package.json that names a dependency by %s, and fetches nothing', { timeout: 60_000 }, async (_, extra, named) => {
    const generation = await generate('WEB', { 'package.json': packageJson(extra(internal.url)) });

    expectRefusedInstall(generation, named, 'only from the npm registry');
  });

  it('refuses a lock file that pins a URL before anything runs', { timeout: 60_000 }, async () => {
    const lock = { name: 'kiln-app', lockfileVersion: 3, packages: { 'node_modules/react': { version: '19.1.0', resolved: `${internal.url}/react.tgz` } } };
    const generation = await generate('WEB', { 'package.json': packageJson({}), 'package-lock.json': `${JSON.stringify(lock, null, 2)}\n` });

    expect(generation.status).toBe('FAILED');
    expect(generation.error?.code).toBe('UNSAFE_OUTPUT');
    expect(generation.error?.message).toMatch(/"package-lock.json" is a lock file/);
    expect(generation.buildSteps).toEqual([]);
    expect(internal.requests).toEqual([]);
  });

  /** Round 0's vite.config.js runs `plant` as project code, then fails with a diagnostic, so a fix round follows. */
  const plantingViteConfig = (plant: string) => `import * as fs from 'node:fs';
${plant}
console.log(process.cwd() + '/src/App.tsx:1:7: ERROR: Expected ";" but found "x"');
process.exit(1);
`;

  it('removes an .npmrc a build step left before a fix round installs again, and fetches from the server\'s registry', { timeout: 90_000 }, async () => {
    // Round 0: the project's vite.config.js plants an .npmrc pointing npm at the internal address, then fails.
    const generation = await generate(
      'WEB',
      { 'package.json': packageJson({}), 'vite.config.js': plantingViteConfig(`fs.writeFileSync('.npmrc', 'registry=${internal.url}/\\n@kiln:registry=${internal.url}/\\n');`) },
      // The fix changes package.json, so the install runs again in the workspace the build step wrote into.
      {
        'package.json': packageJson({ dependencies: { react: '^19.1.0', 'react-dom': '^19.1.0', '@kiln/widgets': 'latest' } }),
        'vite.config.js': 'export default {};\n',
      },
    );

    expect(generation.error).toBeNull();
    expect(generation.status).toBe('SUCCEEDED');
    const { generation: rounds } = await suite.owner.client.expectNoErrors(BuildRoundsDocument, { id: generation.id });
    const reinstall = rounds!.buildLog.filter((line) => line.step === 'install' && line.round === 1).map((line) => line.text);
    expect(reinstall).toEqual([
      expect.stringMatching(/^\[dependency policy\] removed \.npmrc: /),
      'fake npm install, registry https://registry.npmjs.org/, allow-git none',
    ]);
    expect(internal.requests).toEqual([]);
  });

  it('removes the node_modules a build step left before a fix round installs again, so npm follows none of its dependencies', { timeout: 90_000 }, async () => {
    // Round 0: vite.config.js "installs" a package whose manifest, and npm's hidden lock file, name the internal address.
    const plant = `fs.mkdirSync('node_modules/leak', { recursive: true });
fs.writeFileSync('node_modules/leak/package.json', JSON.stringify({ name: 'leak', version: '1.0.0', dependencies: { secret: '${internal.url}/secret.tgz' } }));
fs.writeFileSync('node_modules/.package-lock.json', JSON.stringify({ name: 'kiln-app', lockfileVersion: 3, packages: { 'node_modules/leak': { version: '1.0.0', resolved: '${internal.url}/leak.tgz' } } }));`;
    const generation = await generate(
      'WEB',
      { 'package.json': packageJson({}), 'vite.config.js': plantingViteConfig(plant) },
      // The fix asks for "leak" by a registry range the planted copy satisfies, so npm would keep it and fetch what it names.
      { 'package.json': packageJson({ dependencies: { react: '^19.1.0', 'react-dom': '^19.1.0', leak: '^1.0.0' } }), 'vite.config.js': 'export default {};\n' },
    );

    expect(generation.error).toBeNull();
    expect(generation.status).toBe('SUCCEEDED');
    const { generation: rounds } = await suite.owner.client.expectNoErrors(BuildRoundsDocument, { id: generation.id });
    const reinstall = rounds!.buildLog.filter((line) => line.step === 'install' && line.round === 1).map((line) => line.text);
    expect(reinstall).toEqual([expect.stringMatching(/^\[dependency policy\] removed node_modules: /), 'fake npm install, registry https://registry.npmjs.org/, allow-git none']);
    expect(internal.requests).toEqual([]);
  });

  it.each([
    ['git:', (url: string) => `  leak:\n    git: ${url}/leak.git\n`, 'from git'],
    ['hosted: another server', (url: string) => `  leak:\n    hosted: ${url}\n    version: ^1.0.0\n`, 'from hosted'],
    ['hosted: a URL in a flow mapping', (url: string) => `  leak: {hosted: {name: leak, url: "${url}"}, version: ^1.0.0}\n`, 'from hosted'],
    ['a path outside the project', () => '  leak:\n    path: ../..\n', 'outside the project'],
    ['an override from git', (url: string) => `dependency_overrides:\n  flutter_lints:\n    git:\n      url: ${url}/lints.git\n`, 'from git'],
  ])('refuses a pubspec.yaml with a dependency from %s, and fetches nothing', { timeout: 60_000 }, async (_, dependencies, reason) => {
    const generation = await generate('FLUTTER', {
      'pubspec.yaml': pubspec(dependencies(internal.url)),
      'lib/main.dart': "import 'package:flutter/material.dart';\n\nvoid main() => runApp(const Placeholder());\n",
    });

    expectRefusedInstall(generation, 'pubspec.yaml', reason, 'only from pub.dev');
  });

  it('refuses a pubspec_overrides.yaml before anything runs', { timeout: 60_000 }, async () => {
    const generation = await generate('FLUTTER', { 'pubspec_overrides.yaml': `dependency_overrides:\n  leak:\n    hosted: ${internal.url}\n` });

    expect(generation.status).toBe('FAILED');
    expect(generation.error?.code).toBe('UNSAFE_OUTPUT');
    expect(generation.error?.message).toContain('"pubspec_overrides.yaml" is a lock file or dependency override');
    expect(internal.requests).toEqual([]);
  });

  it('still builds honest projects that use the registry, pub.dev and the SDK', { timeout: 90_000 }, async () => {
    const web = await generate('WEB', {
      'package.json': packageJson({ dependencies: { react: '^19.1.0', 'react-dom': '>=19.1.0 <20', 'date-fns': 'latest', lodash: 'npm:lodash-es@^4.17.21' } }),
    });
    expect(web.error).toBeNull();
    expect(web.status).toBe('SUCCEEDED');

    const flutterApp = await generate('FLUTTER', {
      'pubspec.yaml': pubspec('  intl: ^0.20.0\n  http:\n    hosted: https://pub.dev\n    version: ^1.2.0\n  widgets:\n    path: packages/widgets\ndev_dependencies:\n  flutter_test:\n    sdk: flutter\n'),
      'packages/widgets/pubspec.yaml': 'name: widgets\nenvironment:\n  sdk: ">=3.4.0 <4.0.0"\ndependencies:\n  collection: ^1.18.0\n',
      'lib/main.dart': "import 'package:flutter/material.dart';\n\nvoid main() => runApp(const Placeholder());\n",
    });
    expect(flutterApp.error).toBeNull();
    expect(flutterApp.status).toBe('SUCCEEDED');
    expect(internal.requests).toEqual([]);
  });

  // The control: the fetch step can reach the internal address (the fake npm fetches any URL
  // in package.json, even a homepage), so the empty request lists above are the policy's doing.
  it('reaches the internal address from the fetch step when nothing stops it (the control)', { timeout: 60_000 }, async () => {
    const generation = await generate('WEB', { 'package.json': packageJson({ homepage: `${internal.url}/homepage` }) });

    expect(generation.status).toBe('SUCCEEDED');
    expect(internal.requests).toEqual(['GET /homepage']);
    internal.requests.length = 0;
  });
});
