import type { BuildStepSpec } from './build-steps.js';
import { systemPrompt } from './system-prompt.js';
import type { TargetSpec } from './targets.js';

// The file the app's dependencies live in.
const manifest = 'pubspec.yaml';

const template: Record<string, string> = {
  [manifest]: `name: kiln_app
description: An app made with Kiln.
publish_to: none
version: 1.0.0+1

environment:
  sdk: ">=3.4.0 <4.0.0"

dependencies:
  flutter:
    sdk: flutter

flutter:
  uses-material-design: true
`,
  'analysis_options.yaml': `analyzer:
  exclude:
    - build/**
`,
  // `flutter build web` refuses a project without web/index.html.
  'web/index.html': `<!DOCTYPE html>
<html>
<head>
  <base href="$FLUTTER_BASE_HREF">
  <meta charset="UTF-8">
  <meta name="viewport" content="width=device-width, initial-scale=1.0">
  <title>kiln_app</title>
  <link rel="manifest" href="manifest.json">
</head>
<body>
  <script src="flutter_bootstrap.js" async></script>
</body>
</html>
`,
  'web/manifest.json': `${JSON.stringify(
    {
      name: 'kiln_app',
      short_name: 'kiln_app',
      start_url: '.',
      display: 'standalone',
      background_color: '#FFFFFF',
      theme_color: '#0175C2',
      icons: [],
    },
    null,
    2,
  )}
`,
};

const steps: BuildStepSpec[] = [
  // Resolves and downloads packages; runs no project code (build hooks run in `build`).
  { name: 'install', tool: 'flutter', args: ['pub', 'get'], fetch: true, rerunWhenChanged: [manifest] },
  // Infos (lints, deprecations) are advice, not defects: only warnings and errors fail the build.
  // --machine: one `SEVERITY|TYPE|CODE|file|line|col|length|message` line per issue.
  { name: 'analyze', tool: 'flutter', args: ['analyze', '--no-fatal-infos', '--machine'], diagnostics: 'flutter-analyze' },
  { name: 'build', tool: 'flutter', args: ['build', 'web'] },
];

export const flutterTarget: TargetSpec = {
  template,
  manifest,
  steps,
  // Its index.html keeps `<base href="/">`; the preview handler rewrites it when serving.
  bundleDir: 'build/web',
  systemPrompt: systemPrompt({
    app: 'Flutter apps (Dart 3, Material 3) that are built for the web',
    template,
    steps,
    required: ['lib/main.dart: a `main()` that calls `runApp(...)` with the app\'s root widget.'],
    rules: [
      `Use only the Flutter SDK unless you also rewrite ${manifest} whole with the pub.dev packages you add; keep the package name kiln_app.`,
      'Import other files of the app with `package:kiln_app/...` or relative imports under lib/.',
      'No analyzer errors or warnings: no unused imports, no missing `const` where required, no APIs removed from current stable Flutter.',
      'Do not use dart:io or platform plugins that have no web implementation.',
    ],
  }),
};
