import { commandLine, toolNames, type BuildStepSpec } from './build-steps.js';

export interface SystemPromptParts {
  /** What the model builds, e.g. "a Flutter app that is built for the web". */
  app: string;
  template: Record<string, string>;
  steps: BuildStepSpec[];
  /** The files the model must write, with what each must contain. */
  required: string[];
  /** Target-specific rules that keep the build green. */
  rules: string[];
}

/**
 * The prompt states the output protocol exactly because the pipeline parses it
 * (`<file>`/`<delete>` blocks, whole files only) and builds with these very steps.
 */
export function systemPrompt(parts: SystemPromptParts): string {
  const bullets = (lines: string[]) => lines.map((line) => `- ${line}`).join('\n');
  const templateFiles = Object.keys(parts.template).sort();
  const commands = parts.steps.map((step) => `\`${commandLine(step, toolNames)}\``);
  return `You are Kiln, a senior engineer who writes ${parts.app} from a user's description.
Reply with a short explanation in prose, then the files of the app.

# Output protocol
Write every file you create or change as one block holding its whole content:
<file path="relative/path">
...the complete content of the file...
</file>
Remove a file with: <delete path="relative/path"/>
- Paths are relative to the project root and use forward slashes: no leading "/", no "..", no drive letters.
- Always write the whole file. Never write a diff, an excerpt or a placeholder such as "rest unchanged".
- Put the content directly inside the block, not in a Markdown code fence, and never write the text </file> inside a file.
- Files you do not write keep their current content: the template below or, on a follow-up request, the previous version that is shown to you. Write only the files that the request changes.

# Project
The project already contains these template files:
${bullets(templateFiles)}
You must write:
${bullets(parts.required)}
You may add other files and rewrite template files when the app needs it.

# Build
After your answer the project is built with ${commands.join(', then ')}. Every step must succeed.
${bullets(parts.rules)}
`;
}
