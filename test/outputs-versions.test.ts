import { createHash } from 'node:crypto';
import { applyPatch } from 'diff';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AddProjectMemberDocument,
  ArchiveProjectDocument,
  CancelGenerationDocument,
  ConversationDocument,
  GeneratedFileDocument,
  GenerationArchiveDocument,
  GenerationDiffDocument,
  GenerationPreviewDocument,
  type ProjectRole,
  RemoveProjectMemberDocument,
  RestoreGenerationDocument,
  RetryGenerationDocument,
} from './gql/graphql.js';
import { unzip, untarGz } from './support/archives.js';
import { databaseKind } from './support/db.js';
import { useFakeOpenAi } from './support/fake-openai.js';
import { createProject, expectTypename, signUp, type TestUser } from './support/fixtures.js';
import { type Generation, GenerationWatch, getGeneration, logLineMatching, startAccepted, startGeneration, waitForEnd } from './support/generation-helpers.js';
import type { GraphQLClient } from './support/server.js';
import { useGenerationServer } from './support/suite-server.js';

// Versions a person compares, goes back to and takes away: diffs between generations
// (patches that apply), restore (a new generation with exactly the old files, built
// again, no model call, the next follow-up building on it), and archives of exactly
// Generation.files. The model is a fake OpenAI-compatible server that counts requests.

const sha256 = (content: Buffer | string) => createHash('sha256').update(content).digest('hex');
const dart = (title: string, extra = '') =>
  `import 'package:flutter/material.dart';\n\nconst String appTitle = '${title}';\n\nvoid main() => runApp(const MaterialApp(home: Text(appTitle)));\n${extra}`;
const answer = (...files: { path: string; content?: string }[]) => [
  'Here you go.\n',
  ...files.map((file) => (file.content === undefined ? `<delete path="${file.path}"/>\n` : `<file path="${file.path}">\n${file.content}</file>\n`)),
];

describe(`versions: diffs, restore and archives (${databaseKind})`, () => {
  const llm = useFakeOpenAi();
  const suite = useGenerationServer(() => ({ ...llm.kilnEnv, AUTO_FIX_MAX_ROUNDS: '0' }));
  let editor: TestUser;
  let viewer: TestUser;
  let projectId: string;
  let first: Generation;
  let second: Generation;

  const addMember = async (member: TestUser, role: ProjectRole) =>
    expectTypename(
      (await suite.owner.client.expectNoErrors(AddProjectMemberDocument, { input: { projectId, email: member.email, role } })).addProjectMember,
      'ProjectMember',
    );
  const run = async (user: TestUser, input: { prompt: string; sessionId?: string }, ...files: { path: string; content?: string }[]) => {
    llm.script({ kind: 'stream', chunks: answer(...files) });
    const started = await startAccepted(user.client, { projectId, ...input });
    const ended = await waitForEnd(suite.server, user.client, user.accessToken, started.id);
    expect(ended.status, JSON.stringify(ended.error)).toBe('SUCCEEDED');
    return ended;
  };
  const contents = async (client: GraphQLClient, generation: Generation) => {
    const files = new Map<string, string>();
    for (const file of generation.files) {
      const { generation: withFile } = await client.expectNoErrors(GeneratedFileDocument, { id: generation.id, path: file.path });
      files.set(file.path, withFile!.file!.content);
    }
    return files;
  };

  beforeAll(async () => {
    [editor, viewer] = await Promise.all([signUp(suite.server), signUp(suite.server)]);
    projectId = (await createProject(suite.owner.client, { target: 'FLUTTER', name: 'Café Planner: v2!' })).id;
    await addMember(editor, 'EDITOR');
    await addMember(viewer, 'VIEWER');
    first = await run(suite.owner, { prompt: 'A planner' }, { path: 'lib/main.dart', content: dart('One') }, { path: 'lib/extra.dart', content: 'int extra() => 1;\n' });
    second = await run(
      suite.owner,
      { prompt: 'Rename it, drop extra, add a helper', sessionId: first.sessionId },
      { path: 'lib/main.dart', content: dart('Two', '// second version\n') },
      { path: 'lib/extra.dart' },
      { path: 'lib/helper.dart', content: 'String greet(String name) => "Hello $name";' },
    );
  }, 60_000);

  it('diffs a follow-up against its parent: per file, with counts and patches that apply', async () => {
    const { generation } = await viewer.client.expectNoErrors(GenerationDiffDocument, { id: second.id });
    const diff = generation!.diff!;
    expect(diff.against).toEqual({ id: first.id });
    expect(diff.files.map((file) => [file.path, file.change])).toEqual([
      ['lib/extra.dart', 'DELETED'],
      ['lib/helper.dart', 'ADDED'],
      ['lib/main.dart', 'MODIFIED'],
    ]);
    const before = await contents(viewer.client, first);
    const after = await contents(viewer.client, second);
    for (const file of diff.files) {
      const patched = applyPatch(before.get(file.path) ?? '', file.patch);
      expect(patched, file.path).toBe(after.get(file.path) ?? '');
    }
    const main = diff.files.find((file) => file.path === 'lib/main.dart')!;
    expect([main.additions, main.deletions]).toEqual([2, 1]);
    expect(diff.files.find((file) => file.path === 'lib/extra.dart')).toMatchObject({ additions: 0, deletions: 1 });
    expect(diff.files.find((file) => file.path === 'lib/helper.dart')).toMatchObject({ additions: 1, deletions: 0 });
    expect(diff.additions).toBe(diff.files.reduce((sum, file) => sum + file.additions, 0));
    expect(diff.deletions).toBe(diff.files.reduce((sum, file) => sum + file.deletions, 0));
  });

  it('diffs the first generation against nothing, and any two generations of the project either way', async () => {
    const { generation } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: first.id });
    expect(generation!.diff!.against).toBeNull();
    expect(generation!.diff!.files.map((file) => file.path)).toEqual(first.files.map((file) => file.path));
    expect(new Set(generation!.diff!.files.map((file) => file.change))).toEqual(new Set(['ADDED']));

    const { generation: back } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: first.id, against: second.id });
    const after = await contents(suite.owner.client, second);
    const before = await contents(suite.owner.client, first);
    expect(back!.diff!.against).toEqual({ id: second.id });
    for (const file of back!.diff!.files) expect(applyPatch(after.get(file.path) ?? '', file.patch), file.path).toBe(before.get(file.path) ?? '');
    expect(back!.diff!.files.map((file) => [file.path, file.change])).toEqual([
      ['lib/extra.dart', 'ADDED'],
      ['lib/helper.dart', 'DELETED'],
      ['lib/main.dart', 'MODIFIED'],
    ]);
  });

  it('refuses to diff against a generation of another project, or one that does not exist', async () => {
    const elsewhere = await createProject(suite.owner.client, { target: 'FLUTTER' });
    llm.script({ kind: 'stream', chunks: answer({ path: 'lib/main.dart', content: dart('Else') }) });
    const other = await startAccepted(suite.owner.client, { projectId: elsewhere.id, prompt: 'Elsewhere' });
    await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, other.id);
    for (const against of [other.id, 'R2VuZXJhdGlvbjpub3BlIQ==', 'garbage']) {
      const response = await suite.owner.client.request(GenerationDiffDocument, { id: second.id, against });
      expect(response.data?.generation?.diff, against).toBeNull();
      expect(response.errors?.map((error) => error.extensions?.code), against).toEqual(['NOT_FOUND']);
    }
  });

  it('shows no changes for a generation that wrote no files, running or cancelled, either way round', async () => {
    const elsewhere = await createProject(suite.owner.client, { target: 'FLUTTER' });
    llm.script({ kind: 'stream', chunks: answer({ path: 'lib/main.dart', content: dart('Kept') }) });
    const started = await startAccepted(suite.owner.client, { projectId: elsewhere.id, prompt: 'A kept app' });
    const kept = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
    expect(kept.status).toBe('SUCCEEDED');
    llm.script({ kind: 'stall', chunks: ['Thinking'] });
    const idle = await startAccepted(suite.owner.client, { projectId: elsewhere.id, prompt: 'Never gets to write', sessionId: kept.sessionId });

    const expectNoChanges = async (when: string) => {
      const { generation: own } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: idle.id });
      expect(own!.diff, when).toEqual({ against: { id: kept.id }, additions: 0, deletions: 0, files: [] });
      const { generation: mirror } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: kept.id, against: idle.id });
      expect(mirror!.diff, when).toEqual({ against: { id: idle.id }, additions: 0, deletions: 0, files: [] });
    };
    const watch = new GenerationWatch(suite.server.url, suite.owner.accessToken, idle.id);
    try {
      await watch.until((state) => state.status === 'RUNNING');
      await expectNoChanges('running');
      await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: idle.id });
      expect(await watch.finished()).toMatchObject({ status: 'CANCELLED' });
    } finally {
      watch.close();
    }
    expect((await getGeneration(suite.owner.client, idle.id)).files).toEqual([]);
    await expectNoChanges('cancelled');
  });

  it('shows no changes for a restore that wrote nothing (queued, then cancelled), either way round', async () => {
    const elsewhere = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const runThere = async (input: { prompt: string; sessionId?: string }, ...files: { path: string; content?: string }[]) => {
      llm.script({ kind: 'stream', chunks: answer(...files) });
      const started = await startAccepted(suite.owner.client, { projectId: elsewhere.id, ...input });
      const ended = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
      expect(ended.status).toBe('SUCCEEDED');
      return ended;
    };
    const old = await runThere({ prompt: 'An old app' }, { path: 'lib/main.dart', content: dart('Old') });
    const latest = await runThere({ prompt: 'A new app', sessionId: old.sessionId }, { path: 'lib/main.dart', content: dart('New') }, { path: 'lib/new.dart', content: 'int added() => 2;\n' });

    // Both worker slots taken by runs that stall (other projects): the restore stays queued.
    llm.script({ kind: 'stall', chunks: ['Thinking'] });
    const watches: GenerationWatch[] = [];
    try {
      for (const prompt of ['Stalls', 'Stalls too']) {
        const busy = await createProject(editor.client, { target: 'FLUTTER' });
        const started = await startAccepted(editor.client, { projectId: busy.id, prompt });
        watches.push(new GenerationWatch(suite.server.url, editor.accessToken, started.id));
      }
      for (const watch of watches) await watch.until((state) => state.status === 'RUNNING');
      const restored = expectTypename((await suite.owner.client.expectNoErrors(RestoreGenerationDocument, { id: old.id })).restoreGeneration, 'Generation');
      expect(restored).toMatchObject({ status: 'QUEUED', parent: { id: latest.id }, restoredFrom: { id: old.id } });

      // It stands for the version it started from, its parent's: never the files it did not restore.
      const expectNoChanges = async (when: string) => {
        const { generation: own } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: restored.id });
        expect(own!.diff, when).toEqual({ against: { id: latest.id }, additions: 0, deletions: 0, files: [] });
        const { generation: mirror } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: latest.id, against: restored.id });
        expect(mirror!.diff, when).toEqual({ against: { id: restored.id }, additions: 0, deletions: 0, files: [] });
      };
      await expectNoChanges('queued');
      await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: restored.id });
      const cancelled = await getGeneration(suite.owner.client, restored.id);
      expect(cancelled).toMatchObject({ status: 'CANCELLED', files: [] });
      await expectNoChanges('cancelled');
    } finally {
      for (const watch of watches) await editor.client.expectNoErrors(CancelGenerationDocument, { id: watch.id });
      for (const watch of watches) await watch.finished().finally(() => watch.close());
    }
  });

  it('archives exactly Generation.files as ZIP and tar.gz, as an attachment named after the project', async () => {
    for (const [format, unpack, type] of [
      ['ZIP', async (body: Buffer) => unzip(body), 'application/zip'],
      ['TAR_GZ', untarGz, 'application/gzip'],
    ] as const) {
      const { generation } = await viewer.client.expectNoErrors(GenerationArchiveDocument, { id: second.id, format });
      const archive = generation!.archive!;
      expect(archive.filename).toMatch(new RegExp(`^cafe-planner-v2-[0-9a-f]{8}\\.${format === 'ZIP' ? 'zip' : 'tar\\.gz'}$`));
      const response = await fetch(archive.url);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe(type);
      expect(response.headers.get('content-disposition')).toBe(`attachment; filename="${archive.filename}"`);
      const files = await unpack(Buffer.from(await response.arrayBuffer()));
      expect([...files.keys()].sort()).toEqual(second.files.map((file) => file.path).sort());
      for (const file of second.files) {
        expect(sha256(files.get(file.path)!), file.path).toBe(file.sha256);
        expect(files.get(file.path)!.length).toBe(file.size);
      }
    }
    // Without a format: ZIP.
    const { generation } = await suite.owner.client.expectNoErrors(GenerationArchiveDocument, { id: second.id });
    expect(generation!.archive!.filename.endsWith('.zip')).toBe(true);
  });

  it('offers an archive once the generation has ended, not while its build runs (a fix round could still change its files)', async () => {
    const waiting = 'mkfifo release\necho "a build waiting for its release"\nread go < release\n';
    llm.script({ kind: 'stream', chunks: answer({ path: 'lib/main.dart', content: dart('Held') }, { path: 'hook/build.sh', content: waiting }) });
    const held = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(suite.owner.client, { projectId: held.id, prompt: 'A build that waits' });
    await logLineMatching(suite.server.url, suite.owner.accessToken, started.id, (line) => line.text === 'a build waiting for its release');

    let paths: string[];
    try {
      const running = await getGeneration(suite.owner.client, started.id);
      expect(running.status).toBe('RUNNING');
      paths = running.files.map((file) => file.path).sort();
      expect(paths).toContain('hook/build.sh');
      expect((await suite.owner.client.expectNoErrors(GenerationArchiveDocument, { id: started.id })).generation!.archive).toBeNull();
    } finally {
      await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
    }
    expect((await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id)).status).toBe('CANCELLED');
    const { archive } = (await suite.owner.client.expectNoErrors(GenerationArchiveDocument, { id: started.id })).generation!;
    const response = await fetch(archive!.url);
    expect(response.status).toBe(200);
    expect([...(await unzip(Buffer.from(await response.arrayBuffer()))).keys()].sort()).toEqual(paths);
  });

  it('restores an earlier version as a new generation: same files, built again, no model call, history kept', async () => {
    const requestsBefore = llm.requests.length;
    const { restoreGeneration } = await editor.client.expectNoErrors(RestoreGenerationDocument, { id: first.id });
    const restored = expectTypename(restoreGeneration, 'Generation');
    expect(restored).toMatchObject({ status: 'QUEUED', sessionId: first.sessionId, parent: { id: second.id }, restoredFrom: { id: first.id } });
    const watch = new GenerationWatch(suite.server.url, editor.accessToken, restored.id);
    const states = await watch.finished().finally(() => watch.close());
    expect(states.status).toBe('SUCCEEDED');
    expect(watch.states.map((state) => state.phase)).not.toContain('FIXING');
    expect(llm.requests.length).toBe(requestsBefore);

    const done = await getGeneration(editor.client, restored.id);
    expect(done.files.map(({ path, sha256, size }) => ({ path, sha256, size }))).toEqual(first.files.map(({ path, sha256, size }) => ({ path, sha256, size })));
    expect(done.output).toBe('');
    expect(done.usage).toEqual({ inputTokens: 0, outputTokens: 0 });
    expect(done.buildSteps.map((step) => step.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
    expect((await editor.client.expectNoErrors(GenerationPreviewDocument, { id: restored.id })).generation!.preview).not.toBeNull();
    // A viewer may not restore, but sees the version: a preview URL too.
    const { generation: seen } = await viewer.client.expectNoErrors(GenerationPreviewDocument, { id: restored.id });
    expect((await fetch(seen!.preview!.url)).status).toBe(200);
    // History is not rewritten: the versions in between are still there, unchanged.
    expect((await getGeneration(suite.owner.client, second.id)).files).toEqual(second.files);
    const { generation: diff } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: restored.id, against: first.id });
    expect(diff!.diff!.files).toEqual([]);

    // The next follow-up builds on the restored files and sees the conversation as it stood then.
    llm.script({ kind: 'stream', chunks: answer({ path: 'lib/later.dart', content: 'int later() => 3;\n' }) });
    const next = await startAccepted(suite.owner.client, { projectId, prompt: 'Add a later helper', sessionId: first.sessionId });
    const after = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, next.id);
    expect(after.status).toBe('SUCCEEDED');
    expect(after.parent).toEqual({ id: restored.id });
    expect(after.files.map((file) => file.path)).toEqual([...first.files.map((file) => file.path), 'lib/later.dart'].sort());
    const request = llm.requests.at(-1)!.body;
    const said = request.messages.map((message) => message.content).join('\n');
    expect(said).toContain('A planner');
    expect(said).not.toContain('Rename it, drop extra, add a helper');
    expect(said).toContain("appTitle = 'One'");
    expect(said).not.toContain("appTitle = 'Two'");
  });

  it("retries a restore as a restore: the same files again, no model call, no turn in the conversation", async () => {
    const requestsBefore = llm.requests.length;
    const { project: before } = await suite.owner.client.expectNoErrors(ConversationDocument, { projectId, sessionId: first.sessionId });
    const restored = expectTypename((await editor.client.expectNoErrors(RestoreGenerationDocument, { id: first.id })).restoreGeneration, 'Generation');
    expect((await waitForEnd(suite.server, editor.client, editor.accessToken, restored.id)).status).toBe('SUCCEEDED');

    const retry = expectTypename((await editor.client.expectNoErrors(RetryGenerationDocument, { id: restored.id })).retryGeneration, 'Generation');
    const done = await waitForEnd(suite.server, editor.client, editor.accessToken, retry.id);
    expect(done).toMatchObject({ status: 'SUCCEEDED', retryOf: { id: restored.id }, output: '', usage: { inputTokens: 0, outputTokens: 0 } });
    expect(done.files.map(({ path, sha256 }) => ({ path, sha256 }))).toEqual(first.files.map(({ path, sha256 }) => ({ path, sha256 })));
    expect(llm.requests.length).toBe(requestsBefore);
    const { project: after } = await suite.owner.client.expectNoErrors(ConversationDocument, { projectId, sessionId: first.sessionId });
    expect(after!.conversation).toEqual(before!.conversation);
  });

  it('runs one generation of a session at a time: a follow-up, one naming a parent, a retry and a restore wait for it', async () => {
    llm.script({ kind: 'stall', chunks: ['Thinking'] });
    const running = await startAccepted(suite.owner.client, { projectId, prompt: 'Stalls', sessionId: first.sessionId });
    const refusals = [
      await startGeneration(suite.owner.client, { projectId, prompt: 'Again', sessionId: first.sessionId }),
      await startGeneration(suite.owner.client, { projectId, prompt: 'From the first', parentGenerationId: first.id }),
      (await suite.owner.client.expectNoErrors(RetryGenerationDocument, { id: second.id })).retryGeneration,
      (await suite.owner.client.expectNoErrors(RestoreGenerationDocument, { id: first.id })).restoreGeneration,
    ];
    for (const refused of refusals) expect(expectTypename(refused, 'InvalidStateError').message).toMatch(/session is still queued or running/);
    await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: running.id });
    await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, running.id);

    // Two follow-ups at once: one is accepted, the other finds the session busy.
    llm.script({ kind: 'stall', chunks: ['Thinking'] });
    const both = await Promise.all(['One', 'Other'].map((prompt) => startGeneration(suite.owner.client, { projectId, prompt, sessionId: first.sessionId })));
    expect(both.map((result) => result.__typename).sort()).toEqual(['Generation', 'InvalidStateError']);
    const accepted = expectTypename(both.find((result) => result.__typename === 'Generation')!, 'Generation');
    await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: accepted.id });
    await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, accepted.id);
  });

  it('stops the running generation of a project when it is archived', async () => {
    const archived = await createProject(suite.owner.client, { target: 'FLUTTER' });
    llm.script({ kind: 'stall', chunks: ['Thinking'] });
    const running = await startAccepted(suite.owner.client, { projectId: archived.id, prompt: 'Stalls until stopped' });
    const watch = new GenerationWatch(suite.server.url, suite.owner.accessToken, running.id);
    try {
      await watch.until((state) => state.status === 'RUNNING');
      expectTypename((await suite.owner.client.expectNoErrors(ArchiveProjectDocument, { id: archived.id })).archiveProject, 'Project');
      expect(await watch.finished()).toMatchObject({ status: 'CANCELLED' });
    } finally {
      watch.close();
    }
  });

  it("stops a removed member's queued and running generations in the project, and no one else's", async () => {
    const shared = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const member = await signUp(suite.server);
    const { addProjectMember } = await suite.owner.client.expectNoErrors(AddProjectMemberDocument, {
      input: { projectId: shared.id, email: member.email, role: 'EDITOR' },
    });
    expectTypename(addProjectMember, 'ProjectMember');
    llm.script({ kind: 'stall', chunks: ['Thinking'] });
    const owners = await startAccepted(suite.owner.client, { projectId: shared.id, prompt: "The owner's, stalls until stopped" });
    const ownersWatch = new GenerationWatch(suite.server.url, suite.owner.accessToken, owners.id);
    const watches: GenerationWatch[] = [ownersWatch];
    try {
      await ownersWatch.until((state) => state.status === 'RUNNING');
      // Two workers: one of the member's runs, the other waits its turn.
      for (const prompt of ['Stalls', 'Stalls too']) {
        const started = await startAccepted(member.client, { projectId: shared.id, prompt });
        watches.push(new GenerationWatch(suite.server.url, suite.owner.accessToken, started.id));
      }
      await Promise.any(watches.slice(1).map((watch) => watch.until((state) => state.status === 'RUNNING')));
      const { removeProjectMember } = await suite.owner.client.expectNoErrors(RemoveProjectMemberDocument, {
        input: { projectId: shared.id, userId: member.id },
      });
      expectTypename(removeProjectMember, 'Project');
      for (const watch of watches.slice(1)) expect(await watch.finished()).toMatchObject({ status: 'CANCELLED' });
      expect((await getGeneration(suite.owner.client, owners.id)).status).toBe('RUNNING');
      await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: owners.id });
      expect(await ownersWatch.finished()).toMatchObject({ status: 'CANCELLED' });
    } finally {
      for (const watch of watches) watch.close();
    }
  });

  it('neither retries nor restores in an archived project', async () => {
    const archived = await createProject(suite.owner.client, { target: 'FLUTTER' });
    llm.script({ kind: 'stream', chunks: answer({ path: 'lib/main.dart', content: dart('Kept') }) });
    const started = await startAccepted(suite.owner.client, { projectId: archived.id, prompt: 'A kept app' });
    expect((await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id)).status).toBe('SUCCEEDED');
    expectTypename((await suite.owner.client.expectNoErrors(ArchiveProjectDocument, { id: archived.id })).archiveProject, 'Project');
    const requestsBefore = llm.requests.length;
    const retried = (await suite.owner.client.expectNoErrors(RetryGenerationDocument, { id: started.id })).retryGeneration;
    const restored = (await suite.owner.client.expectNoErrors(RestoreGenerationDocument, { id: started.id })).restoreGeneration;
    for (const refused of [retried, restored]) expect(expectTypename(refused, 'InvalidStateError').message).toMatch(/archived/);
    expect(llm.requests.length).toBe(requestsBefore);
  });

  it('lets owners and editors restore; a viewer is forbidden, an outsider finds nothing, a running one cannot be', async () => {
    const asViewer = (await viewer.client.expectNoErrors(RestoreGenerationDocument, { id: first.id })).restoreGeneration;
    expectTypename(asViewer, 'ForbiddenError');
    const outsider = await signUp(suite.server);
    expectTypename((await outsider.client.expectNoErrors(RestoreGenerationDocument, { id: first.id })).restoreGeneration, 'NotFoundError');

    // A generation still running (the model stalls) cannot be restored yet.
    const requestsBefore = llm.requests.length;
    llm.script({ kind: 'stall', chunks: ['Thinking'] });
    const other = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const running = await startAccepted(suite.owner.client, { projectId: other.id, prompt: 'Stalls' });
    expectTypename((await suite.owner.client.expectNoErrors(RestoreGenerationDocument, { id: running.id })).restoreGeneration, 'InvalidStateError');
    const watch = new GenerationWatch(suite.server.url, suite.owner.accessToken, running.id);
    await watch.until((state) => state.status === 'RUNNING');
    expectTypename((await suite.owner.client.expectNoErrors(RestoreGenerationDocument, { id: running.id })).restoreGeneration, 'InvalidStateError');
    await suite.owner.client.expectNoErrors(CancelGenerationDocument, { id: running.id });
    await watch.finished().finally(() => watch.close());
    expect(llm.requests.length).toBe(requestsBefore + 1);
  });
});
