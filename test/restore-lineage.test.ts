import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CancelGenerationDocument, RestoreGenerationDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { useFakeOpenAi } from './support/fake-openai.js';
import { createProject, expectTypename } from './support/fixtures.js';
import { logLineMatching, rawId, startAccepted, waitForEnd } from './support/generation-helpers.js';
import { useGenerationServer } from './support/suite-server.js';

// What a follow-up of a restore builds on: the restored generation's files and the
// conversation as it stood there, its own turn included, whether or not that generation
// succeeded (a restore may bring back one cancelled after it wrote its files).

const dart = (title: string) => `import 'package:flutter/material.dart';\n\nconst String appTitle = '${title}';\n\nvoid main() => runApp(const MaterialApp(home: Text(appTitle)));\n`;
const answer = (prose: string, ...files: { path: string; content?: string }[]) => [
  `${prose}\n`,
  ...files.map((file) => (file.content === undefined ? `<delete path="${file.path}"/>\n` : `<file path="${file.path}">\n${file.content}</file>\n`)),
];
// The fake flutter runs hook/build.sh in `build web`: this one waits until the test writes to the pipe.
const waiting = 'mkfifo release\necho "a build waiting for its release"\nread go < release\n';

describe(`restore: the conversation a follow-up sees (${databaseKind})`, () => {
  const llm = useFakeOpenAi();
  const suite = useGenerationServer(() => ({ ...llm.kilnEnv, AUTO_FIX_MAX_ROUNDS: '0' }));

  it('keeps the turn of a restored generation that was cancelled while it built, and drops the turns after it', async () => {
    const { owner, server } = suite;
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const workspaceOf = (generation: { id: string }) => join(server.workspacesDir, rawId(project.id), rawId(generation.id));
    const held = (generation: { id: string }) => logLineMatching(server.url, owner.accessToken, generation.id, (line) => line.text === 'a build waiting for its release');

    llm.script({ kind: 'stream', chunks: answer('A planner it is.', { path: 'lib/main.dart', content: dart('One') }) });
    const base = await waitForEnd(server, owner.client, owner.accessToken, (await startAccepted(owner.client, { projectId: project.id, prompt: 'A planner' })).id);
    expect(base.status).toBe('SUCCEEDED');

    // It writes its files, then is cancelled while its build waits.
    llm.script({ kind: 'stream', chunks: answer('Held it is, with a build hook.', { path: 'lib/main.dart', content: dart('Held') }, { path: 'hook/build.sh', content: waiting }) });
    const source = await startAccepted(owner.client, { projectId: project.id, prompt: 'Make the title Held', sessionId: base.sessionId });
    await held(source);
    await owner.client.expectNoErrors(CancelGenerationDocument, { id: source.id });
    const cancelled = await waitForEnd(server, owner.client, owner.accessToken, source.id);
    expect(cancelled.status).toBe('CANCELLED');
    expect(cancelled.files.map((file) => file.path)).toContain('hook/build.sh');

    // A turn after it, which the restore goes back past.
    llm.script({ kind: 'stream', chunks: answer('Renamed.', { path: 'lib/main.dart', content: dart('Other') }) });
    const other = await waitForEnd(server, owner.client, owner.accessToken, (await startAccepted(owner.client, { projectId: project.id, prompt: 'Call it Other', sessionId: base.sessionId })).id);
    expect(other.status).toBe('SUCCEEDED');

    const restored = expectTypename((await owner.client.expectNoErrors(RestoreGenerationDocument, { id: source.id })).restoreGeneration, 'Generation');
    await held(restored);
    await writeFile(join(workspaceOf(restored), 'release'), 'go\n');
    expect((await waitForEnd(server, owner.client, owner.accessToken, restored.id)).status).toBe('SUCCEEDED');

    // Without the hook, so that its build does not wait.
    llm.script({ kind: 'stream', chunks: answer('Added.', { path: 'lib/later.dart', content: 'int later() => 3;\n' }, { path: 'hook/build.sh' }) });
    const next = await startAccepted(owner.client, { projectId: project.id, prompt: 'Add a later helper', sessionId: base.sessionId });
    const after = await waitForEnd(server, owner.client, owner.accessToken, next.id);
    expect(after).toMatchObject({ status: 'SUCCEEDED', parent: { id: restored.id } });
    const { messages } = llm.requests.at(-1)!.body;
    expect(messages.find((message) => message.role === 'system')!.content).toContain("appTitle = 'Held'");
    const turns = messages.filter((message) => message.role !== 'system');
    expect(turns.map((message) => message.role)).toEqual(['user', 'assistant', 'user', 'assistant', 'user']);
    expect(turns.filter((message) => message.role === 'user').map((message) => message.content)).toEqual(['A planner', 'Make the title Held', 'Add a later helper']);
    expect(turns[1]!.content).toContain('A planner it is.');
    expect(turns[3]!.content).toContain('Held it is, with a build hook.');
  });
});
