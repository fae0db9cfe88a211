import type { BuildStepSpec } from './build-steps.js';
import { systemPrompt } from './system-prompt.js';
import type { TargetSpec } from './targets.js';

const packageJson = {
  name: 'kiln-app',
  private: true,
  version: '0.0.0',
  type: 'module',
  scripts: { build: 'tsc --noEmit && vite build' },
  dependencies: { react: '^19.1.0', 'react-dom': '^19.1.0' },
  devDependencies: {
    '@types/react': '^19.1.0',
    '@types/react-dom': '^19.1.0',
    typescript: '^5.8.0',
    vite: '^6.3.0',
  },
};

const tsconfig = {
  compilerOptions: {
    target: 'ES2022',
    lib: ['ES2022', 'DOM', 'DOM.Iterable'],
    module: 'ESNext',
    moduleResolution: 'bundler',
    jsx: 'react-jsx',
    strict: true,
    noEmit: true,
    isolatedModules: true,
    resolveJsonModule: true,
    skipLibCheck: true,
    // Lets the app import CSS and assets the way Vite serves them.
    types: ['vite/client'],
  },
  include: ['src'],
};

// The file the app's dependencies live in.
const manifest = 'package.json';

const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;

const template: Record<string, string> = {
  [manifest]: json(packageJson),
  'tsconfig.json': json(tsconfig),
  'index.html': `<!doctype html>
<html lang="en">
  <head>
    <meta charset="UTF-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1.0" />
    <title>Kiln app</title>
  </head>
  <body>
    <div id="root"></div>
    <script type="module" src="/src/main.tsx"></script>
  </body>
</html>
`,
  'src/main.tsx': `import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import App from './App';

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
`,
};

const steps: BuildStepSpec[] = [
  // --ignore-scripts: no install script of the project or a package runs (this step has network);
  // --no-package-lock: no lock file's `resolved` URL is fetched (see dependency-policy.ts).
  { name: 'install', tool: 'npm', args: ['install', '--ignore-scripts', '--no-package-lock', '--no-audit', '--no-fund'], fetch: true, rerunWhenChanged: [manifest] },
  // --pretty false: one diagnostic a line, `file(line,col): error TSnnnn: message`.
  { name: 'typecheck', tool: 'npm', args: ['exec', '--', 'tsc', '--noEmit', '--pretty', 'false'], diagnostics: 'tsc' },
  // --base ./: relative asset URLs, so the bundle works under its preview URL's path.
  { name: 'build', tool: 'npm', args: ['exec', '--', 'vite', 'build', '--base', './'], diagnostics: 'vite' },
];

export const webTarget: TargetSpec = {
  template,
  manifest,
  steps,
  bundleDir: 'dist',
  systemPrompt: systemPrompt({
    app: 'single-page web apps with React 19, TypeScript and Vite',
    template,
    steps,
    required: [
      'src/App.tsx: `export default function App()` returning the whole app; src/main.tsx renders it into #root.',
    ],
    rules: [
      'TypeScript is strict: type every prop and state, no implicit any, no @ts-ignore.',
      `Use only react and react-dom unless you also rewrite ${manifest} whole with the packages you add; do not add Vite plugins.`,
      'Style with plain CSS files imported from a component (e.g. `import \'./App.css\'`) or inline styles.',
      'Import local modules without a file extension, e.g. `import { Board } from \'./Board\'`.',
    ],
  }),
};
