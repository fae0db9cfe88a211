import type { BuildStepSpec } from './build-steps.js';
import { flutterTarget } from './flutter-target.js';
import { webTarget } from './web-target.js';

export { commandLine, toolNames, type BuildStepSpec, type BuildTool, type ToolBins } from './build-steps.js';

export type ProjectTarget = 'FLUTTER' | 'WEB';

export interface TargetSpec {
  systemPrompt: string;
  /** Files every workspace starts from, by relative path. */
  template: Record<string, string>;
  /**
   * The template file the app's dependencies live in (package.json, pubspec.yaml). The model
   * rewrites it whole to add a package, so every prompt shows its current content.
   */
  manifest: string;
  /** Run in order in the workspace; the first failure ends the build. */
  steps: BuildStepSpec[];
  /** Where a successful build leaves the web bundle, relative to the workspace: what the preview serves. */
  bundleDir: string;
}

const targets: Record<ProjectTarget, TargetSpec> = {
  FLUTTER: flutterTarget,
  WEB: webTarget,
};

export function getTarget(target: ProjectTarget): TargetSpec {
  return targets[target];
}
