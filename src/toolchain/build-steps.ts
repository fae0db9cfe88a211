import type { DiagnosticFormat } from './diagnostics.js';

export type BuildTool = 'flutter' | 'npm';

/** Where each tool's executable lives: a bare name looked up on PATH, or an absolute path. */
export type ToolBins = Record<BuildTool, string>;

export interface BuildStepSpec {
  name: string;
  tool: BuildTool;
  args: string[];
  /**
   * Fetches dependencies (`npm install --ignore-scripts`, `flutter pub get`): the only step
   * with network and a writable tool cache, so it must never run project code.
   */
  fetch?: boolean;
  /** How its failure output becomes diagnostics a fix round can act on; absent: it never does. */
  diagnostics?: DiagnosticFormat;
  /**
   * In a self-healing fix round, runs again only when the round rewrote one of these files:
   * what it did before (installed dependencies) is still in the workspace.
   */
  rerunWhenChanged?: string[];
}

/** The tools as a user (or the model) knows them. */
export const toolNames: ToolBins = { flutter: 'flutter', npm: 'npm' };

/** The command as a user reads it in the build log, e.g. `flutter pub get`. */
export function commandLine(step: BuildStepSpec, bins: ToolBins): string {
  return [bins[step.tool], ...step.args].map(quoteForDisplay).join(' ');
}

function quoteForDisplay(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
