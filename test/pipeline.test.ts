import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConversationDocument, GeneratedFileDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import {
  type Generation,
  GenerationWatch,
  getGeneration,
  logLineMatching,
  rawId,
  replayChunks,
  startAccepted,
  waitForEnd,
} from './support/generation-helpers.js';
import { useGeminiServer } from './support/gemini-server.js';
import { useGenerationServer } from './support/suite-server.js';

// The offline provider end to end through GraphQL, on a FLUTTER project built by the
// fake flutter: what a user sees of a generation from start to finish.

const PHASES = ['QUEUED', 'GENERATING', 'WRITING', 'BUILDING', 'FIXING', 'DONE'];
const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

describe(`the offline pipeline on a FLUTTER project (${databaseKind})`, () => {
  const suite = useGenerationServer({ OFFLINE_CHUNK_DELAY_MS: '5' });

  async function fileContent(generationId: string, path: string): Promise<string> {
    const { generation } = await suite.owner.client.expectNoErrors(GeneratedFileDocument, { id: generationId, path });
    const file = generation?.file;
    if (!file) throw new Error(`no ${path} in generation ${generationId}`);
    expect(file.path).toBe(path);
    expect(file.sha256).toBe(sha256(file.content));
    expect(file.size).toBe(Buffer.byteLength(file.content, 'utf8'));
    return file.content;
  }

  /** Every file of the generation checked against its content; returns path → content. */
  async function filesOf(generation: Generation): Promise<Map<string, string>> {
    const contents = new Map<string, string>();
    for (const file of generation.files) {
      const content = await fileContent(generation.id, file.path);
      expect(file, file.path).toEqual({ path: file.path, size: Buffer.byteLength(content, 'utf8'), sha256: sha256(content) });
      contents.set(file.path, content);
    }
    return contents;
  }

  it('queues at once, streams, writes, builds and succeeds; a follow-up in the session builds on it', async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    // Non-ASCII on purpose: sizes are bytes, not characters.
    const prompt = 'Build a café finder with a map, opening hours and ☕ favourites';
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    expect(started).toMatchObject({ status: 'QUEUED', phase: 'QUEUED', prompt, attempt: 1, startedAt: null, finishedAt: null, error: null });
    expect(started.sessionId).toMatch(/^[0-9a-f-]{36}$/);

    const watch = new GenerationWatch(suite.server.url, suite.owner.accessToken, started.id);
    const end = await watch.finished().finally(() => watch.close());
    expect(end).toMatchObject({ status: 'SUCCEEDED', phase: 'DONE', error: null });
    // Progress only ever moves forward.
    const phases = watch.states.map((s) => PHASES.indexOf(s.phase));
    expect(phases).toEqual([...phases].sort((a, b) => a - b));
    expect(watch.states.at(-1)!.status).toBe('SUCCEEDED');

    const first = await getGeneration(suite.owner.client, started.id);
    expect(first).toMatchObject({ prompt, sessionId: started.sessionId, parent: null, retryOf: null, project: { id: project.id } });
    expect(first.startedAt && first.finishedAt).toBeTruthy();
    expect(first.usage.inputTokens).toBeGreaterThan(0);
    expect(first.usage.outputTokens).toBeGreaterThan(0);

    // Files: the template plus the model's lib/main.dart, which reflects the prompt.
    const files = await filesOf(first);
    expect([...files.keys()]).toEqual(expect.arrayContaining(['lib/main.dart', 'pubspec.yaml', 'web/index.html']));
    expect(files.get('lib/main.dart')).toContain(prompt);
    expect(files.get('lib/main.dart')).toContain('runApp(');

    // Output: exactly the chunks, seq 0.., contiguous; and it carries the file.
    const chunks = await replayChunks(suite.server.url, suite.owner.accessToken, first.id);
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.length).toBeGreaterThan(1);
    expect(first.output).toBe(chunks.map((c) => c.text).join(''));
    expect(first.output).toContain(`<file path="lib/main.dart">\n${files.get('lib/main.dart')}</file>`);

    // Build: every step ran the fake flutter and succeeded; its lines are in the log.
    expect(first.buildSteps).toEqual([
      expect.objectContaining({ name: 'install', command: `${suite.flutter.bin} pub get`, status: 'SUCCEEDED', exitCode: 0 }),
      expect.objectContaining({ name: 'analyze', command: `${suite.flutter.bin} analyze --no-fatal-infos --machine`, status: 'SUCCEEDED', exitCode: 0 }),
      expect.objectContaining({ name: 'build', command: `${suite.flutter.bin} build web`, status: 'SUCCEEDED', exitCode: 0 }),
    ]);
    for (const step of first.buildSteps) expect(step.durationMs).toBeGreaterThanOrEqual(0);
    const log = first.buildLog.map((l) => [l.step, l.stream, l.text]);
    expect(log).toEqual(
      expect.arrayContaining([
        ['install', 'STDOUT', 'Got dependencies!'],
        ['install', 'STDERR', '1 package has newer versions incompatible with dependency constraints.'],
        ['analyze', 'STDOUT', 'No issues found! (ran in 0.8s)'],
        ['build', 'STDOUT', '✓ Built build/web'],
      ]),
    );
    expect(first.buildLog.map((l) => l.seq)).toEqual(first.buildLog.map((_, i) => i));

    // The conversation: the prompt verbatim, then the model's answer.
    const one = await suite.owner.client.expectNoErrors(ConversationDocument, { projectId: project.id, sessionId: first.sessionId });
    expect(one.project?.conversation.map((m) => [m.role, m.content, m.generation?.id])).toEqual([
      ['USER', prompt, first.id],
      ['MODEL', first.output, first.id],
    ]);

    // A follow-up in the same session builds on the first generation.
    const followUpPrompt = 'Now add a list of nearby bakeries\nand a search field';
    const next = await startAccepted(suite.owner.client, { projectId: project.id, prompt: followUpPrompt, sessionId: first.sessionId });
    expect(next.sessionId).toBe(first.sessionId);
    const second = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, next.id);
    expect(second).toMatchObject({ status: 'SUCCEEDED', parent: { id: first.id }, sessionId: first.sessionId, prompt: followUpPrompt });
    expect(second.files.map((f) => f.path)).toEqual(expect.arrayContaining(first.files.map((f) => f.path)));
    const secondMain = await fileContent(second.id, 'lib/main.dart');
    expect(secondMain).toContain('Now add a list of nearby bakeries\\nand a search field');
    expect(secondMain).not.toContain(prompt);
    expect(second.output).toMatch(/^I updated the previous app/);

    const two = await suite.owner.client.expectNoErrors(ConversationDocument, { projectId: project.id, sessionId: first.sessionId });
    expect(two.project?.conversation.map((m) => [m.role, m.content, m.generation?.id])).toEqual([
      ['USER', prompt, first.id],
      ['MODEL', first.output, first.id],
      ['USER', followUpPrompt, second.id],
      ['MODEL', second.output, second.id],
    ]);
  });
});

describe(`old workspaces of a project (${databaseKind})`, () => {
  // One workspace kept per project, and two runs at a time: a long build in one slot while
  // shorter ones finish in the other.
  const suite = useGeminiServer({ WORKSPACES_KEEP_PER_PROJECT: '1', WORKER_CONCURRENCY: '2' });
  const answer = (files: Record<string, string>) => ({
    kind: 'stream' as const,
    chunks: [`Here it is.\n${Object.entries(files).map(([path, content]) => `<file path="${path}">\n${content}</file>\n`).join('')}`],
  });

  it('are removed once newer runs finish, but never the workspace of a build still running', async () => {
    // The first answer's build waits (the fake flutter runs hook/build.sh in `build web`) until the test writes to the pipe.
    const waiting = 'mkfifo release\necho "a long build, waiting for its release"\nread go < release\n';
    suite.gemini.script(answer({ 'hook/build.sh': waiting }), answer({ 'lib/notes.dart': '// a quick one\n' }));
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const { owner, server } = suite;
    const workspaceOf = (generation: { id: string }) => join(server.workspacesDir, rawId(project.id), rawId(generation.id));

    const long = await startAccepted(owner.client, { projectId: project.id, prompt: 'A long build' });
    await logLineMatching(server.url, owner.accessToken, long.id, (line) => line.text === 'a long build, waiting for its release');

    // One after another in the free slot: each is claimed only once the run before it returned,
    // its pruning included, so when the third has ended the second has pruned.
    const quick = [];
    for (const prompt of ['First quick one', 'Second quick one', 'Third quick one']) {
      const started = await startAccepted(owner.client, { projectId: project.id, prompt });
      quick.push(await waitForEnd(server, owner.client, owner.accessToken, started.id));
    }
    expect(quick.map((g) => g.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);

    // A finished one older than the newest went; the running build's workspace, older still, is all there.
    const left = await readdir(join(server.workspacesDir, rawId(project.id)));
    expect(left).not.toContain(rawId(quick[0]!.id));
    expect(left).toContain(rawId(long.id));
    expect(await readFile(join(workspaceOf(long), 'hook', 'build.sh'), 'utf8')).toBe(waiting);

    // And the long build finishes as if nothing happened around it.
    await writeFile(join(workspaceOf(long), 'release'), 'go\n');
    const ended = await waitForEnd(server, owner.client, owner.accessToken, long.id);
    expect(ended).toMatchObject({ status: 'SUCCEEDED', error: null });
    expect(ended.buildSteps.map((step) => [step.name, step.status])).toEqual([
      ['install', 'SUCCEEDED'],
      ['analyze', 'SUCCEEDED'],
      ['build', 'SUCCEEDED'],
    ]);
  });
});
