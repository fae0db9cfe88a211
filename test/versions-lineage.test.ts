import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { serviceScope } from '../src/db/scope.js';
import { generationFiles } from '../src/db/schema.js';
import { MAX_VERSION_FILES } from '../src/generations/output-parser.js';
import { getTarget } from '../src/toolchain/targets.js';
import { GenerationDiffDocument, RestoreGenerationDocument, RetryGenerationDocument } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { useFakeOpenAi } from './support/fake-openai.js';
import { createProject, expectTypename } from './support/fixtures.js';
import { type Generation, rawId, startAccepted, waitForEnd } from './support/generation-helpers.js';
import { LogCapture } from './support/log-capture.js';
import { useGenerationServer } from './support/suite-server.js';

// What a version holds from one generation to the next: a follow-up, its retry and a
// restore start from the parent's files alone (a template file the model deleted stays
// deleted); a version never grows past MAX_VERSION_FILES; a stored file whose path Kiln
// has refused since it was kept is left out instead of blocking every later run.
// FLUTTER projects, built by the fake flutter; the model is a fake OpenAI-compatible server.

const MAIN = "import 'package:flutter/material.dart';\n\nvoid main() => runApp(const Placeholder());\n";
/** lib/main.dart that the fake flutter's analyze reports an error in. */
const BROKEN_MAIN = `${MAIN}const int count = 'three'; // deliberate build error\n`;
const TEMPLATE_FILES = Object.keys(getTarget('FLUTTER').template).sort();
const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');
const answer = (...files: { path: string; content?: string }[]) => [
  'Here you go.\n',
  ...files.map((file) => (file.content === undefined ? `<delete path="${file.path}"/>\n` : `<file path="${file.path}">\n${file.content}</file>\n`)),
];
/** `count` small files under lib/<dir>/. */
const many = (dir: string, count: number) => Array.from({ length: count }, (_, i) => ({ path: `lib/${dir}/f${i}.dart`, content: `int f${i}() => ${i};\n` }));
const paths = (generation: Generation) => generation.files.map((file) => file.path);

describe(`versions from one generation to the next (${databaseKind})`, () => {
  const llm = useFakeOpenAi();
  const logs = new LogCapture();
  const suite = useGenerationServer(() => ({ ...llm.kilnEnv, AUTO_FIX_MAX_ROUNDS: '0', LOG_LEVEL: 'warn' }), 'ok', { logTo: logs });

  async function run(input: { projectId: string; prompt: string; sessionId?: string; parentGenerationId?: string; maxFixRounds?: number }, ...answers: string[][]) {
    llm.script(...answers.map((chunks) => ({ kind: 'stream' as const, chunks })));
    const started = await startAccepted(suite.owner.client, input);
    return waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
  }

  describe('a template file the model deleted', () => {
    let projectId: string;
    let first: Generation;
    let followUp: Generation;

    beforeAll(async () => {
      projectId = (await createProject(suite.owner.client, { target: 'FLUTTER' })).id;
      first = await run({ projectId, prompt: 'An app without analysis options' }, answer({ path: 'lib/main.dart', content: MAIN }, { path: 'analysis_options.yaml' }));
      expect(first.status, JSON.stringify(first.error)).toBe('SUCCEEDED');
      followUp = await run({ projectId, prompt: 'Add a helper', sessionId: first.sessionId }, answer({ path: 'lib/helper.dart', content: 'int helper() => 1;\n' }));
      expect(followUp.status, JSON.stringify(followUp.error)).toBe('SUCCEEDED');
    }, 60_000);

    it('stays deleted in a follow-up: its files and its diff hold only what the model wrote', async () => {
      expect(TEMPLATE_FILES).toContain('analysis_options.yaml');
      expect(paths(first)).not.toContain('analysis_options.yaml');
      expect(paths(followUp)).toEqual([...paths(first), 'lib/helper.dart'].sort());
      const { generation } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: followUp.id });
      expect(generation!.diff!.files.map((file) => [file.path, file.change])).toEqual([['lib/helper.dart', 'ADDED']]);
    });

    it("stays deleted in a follow-up's retry and in a restore", async () => {
      llm.script({ kind: 'stream', chunks: answer({ path: 'lib/helper.dart', content: 'int helper() => 2;\n' }) });
      const retry = expectTypename((await suite.owner.client.expectNoErrors(RetryGenerationDocument, { id: followUp.id })).retryGeneration, 'Generation');
      const retried = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, retry.id);
      expect(retried).toMatchObject({ status: 'SUCCEEDED', parent: { id: first.id } });
      expect(paths(retried)).toEqual([...paths(first), 'lib/helper.dart'].sort());

      const restore = expectTypename((await suite.owner.client.expectNoErrors(RestoreGenerationDocument, { id: first.id })).restoreGeneration, 'Generation');
      const restored = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, restore.id);
      expect(restored.status).toBe('SUCCEEDED');
      expect(restored.files).toEqual(first.files);
    });
  });

  describe('a version at the limit of files', () => {
    let projectId: string;
    let parent: Generation;

    // Four answers of 200 files each (the most one answer may write) on the template's files.
    beforeAll(async () => {
      projectId = (await createProject(suite.owner.client, { target: 'FLUTTER' })).id;
      let sessionId: string | undefined;
      for (const dir of ['a', 'b', 'c', 'd']) {
        parent = await run({ projectId, prompt: `Add the ${dir} files`, ...(sessionId ? { sessionId } : {}) }, answer(...many(dir, 200)));
        expect(parent.status, JSON.stringify(parent.error)).toBe('SUCCEEDED');
        sessionId = parent.sessionId;
      }
      expect(parent.files).toHaveLength(TEMPLATE_FILES.length + 800);
    }, 120_000);

    it('fails a follow-up that would take it past MAX_VERSION_FILES as UNSAFE_OUTPUT, storing nothing', async () => {
      const past = await run({ projectId, prompt: 'Add the e files', parentGenerationId: parent.id }, answer(...many('e', 200)));
      const total = TEMPLATE_FILES.length + 1000;
      expect(total).toBeGreaterThan(MAX_VERSION_FILES);
      expect(past.status).toBe('FAILED');
      expect(past.error).toMatchObject({
        code: 'UNSAFE_OUTPUT',
        message: `The project would hold ${total.toLocaleString('en-US')} files after this answer; Kiln keeps at most 1,000 files in a version.`,
      });
      expect(past.files).toEqual([]);
      expect(past.buildSteps).toEqual([]);
    });

    it("fails a fix round that would take it past the limit, keeping the round's changes out", async () => {
      // The first answer fits (and breaks the build); its fix adds 199 files more than fit.
      const fitting = many('f', 150);
      const failed = await run(
        { projectId, prompt: 'Add the f files', parentGenerationId: parent.id, maxFixRounds: 1 },
        answer({ path: 'lib/main.dart', content: BROKEN_MAIN }, ...fitting),
        answer({ path: 'lib/main.dart', content: MAIN }, ...many('g', 199)),
      );
      const firstVersion = TEMPLATE_FILES.length + 800 + 151;
      expect(failed.status).toBe('FAILED');
      expect(failed.error).toMatchObject({
        code: 'UNSAFE_OUTPUT',
        message: `The project would hold ${(firstVersion + 199).toLocaleString('en-US')} files after this fix round; Kiln keeps at most 1,000 files in a version.`,
      });
      // What it keeps is its first answer's version: the broken lib/main.dart, none of the fix's files.
      expect(failed.files).toHaveLength(firstVersion);
      expect(failed.files.find((file) => file.path === 'lib/main.dart')?.sha256).toBe(sha256(BROKEN_MAIN));
      expect(paths(failed).filter((path) => path.startsWith('lib/g/'))).toEqual([]);
    });

    it("leaves the parent's version untouched", async () => {
      const again = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, parent.id);
      expect(again.files).toEqual(parent.files);
    });
  });

  it('builds a follow-up of a run that wrote no files on the version before it, not on the bare template', async () => {
    const projectId = (await createProject(suite.owner.client, { target: 'FLUTTER' })).id;
    const helper = { path: 'lib/helper.dart', content: 'int helper() => 1;\n' };
    const first = await run({ projectId, prompt: 'An app with a helper' }, answer({ path: 'lib/main.dart', content: MAIN }, helper, { path: 'analysis_options.yaml' }));
    expect(first.status, JSON.stringify(first.error)).toBe('SUCCEEDED');
    // Its follow-up stops inside a block: FAILED/INVALID_OUTPUT, no files.
    const failed = await run({ projectId, prompt: 'Add a counter', parentGenerationId: first.id }, ['Sure.\n', '<file path="lib/counter.dart">\nint count']);
    expect(failed.error?.code).toBe('INVALID_OUTPUT');
    expect(failed.files).toEqual([]);

    const next = await run({ projectId, prompt: 'Add a counter, again', parentGenerationId: failed.id }, answer({ path: 'lib/counter.dart', content: 'int count = 0;\n' }));
    expect(next.status, JSON.stringify(next.error)).toBe('SUCCEEDED');
    // The first version's files are all there (its deleted template file still deleted), with the new one.
    expect(paths(next)).toEqual([...paths(first), 'lib/counter.dart'].sort());
    expect(paths(next)).not.toContain('analysis_options.yaml');
    expect(next.files.find((file) => file.path === 'lib/helper.dart')?.sha256).toBe(sha256(helper.content));
    // And the model was shown them.
    expect(JSON.stringify(llm.requests.at(-1)!.body)).toContain('int helper() => 1;');
    // Its diff is against that version too: the one new file, not every file ADDED.
    const { generation } = await suite.owner.client.expectNoErrors(GenerationDiffDocument, { id: next.id });
    expect(generation!.diff!.against?.id).toBe(first.id);
    expect(generation!.diff!.files.map((file) => [file.path, file.change])).toEqual([['lib/counter.dart', 'ADDED']]);
  });

  it('leaves out a stored file whose path Kiln now refuses, in a follow-up and a restore, and logs it', async () => {
    const projectId = (await createProject(suite.owner.client, { target: 'FLUTTER' })).id;
    const first = await run({ projectId, prompt: 'An app' }, answer({ path: 'lib/main.dart', content: MAIN }));
    expect(first.status, JSON.stringify(first.error)).toBe('SUCCEEDED');
    // Kept before lock files were refused as output.
    const lock = '{"lockfileVersion": 3}\n';
    await serviceScope(suite.server.database.db).run((tx) =>
      tx.insert(generationFiles).values({ generationId: rawId(first.id), path: 'pubspec.lock', content: lock, size: lock.length, sha256: sha256(lock) }),
    );

    const followUp = await run({ projectId, prompt: 'Add a helper', sessionId: first.sessionId }, answer({ path: 'lib/helper.dart', content: 'int helper() => 1;\n' }));
    expect(followUp.status, JSON.stringify(followUp.error)).toBe('SUCCEEDED');
    expect(paths(followUp)).toEqual([...paths(first), 'lib/helper.dart'].sort());
    // The model is not shown it either.
    expect(JSON.stringify(llm.requests.at(-1)!.body)).not.toContain('lockfileVersion');

    const restore = expectTypename((await suite.owner.client.expectNoErrors(RestoreGenerationDocument, { id: first.id })).restoreGeneration, 'Generation');
    const restored = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, restore.id);
    expect(restored.status, JSON.stringify(restored.error)).toBe('SUCCEEDED');
    expect(restored.files).toEqual(first.files);

    const warnings = logs.records().filter((record) => Array.isArray(record.paths) && (record.paths as string[]).includes('pubspec.lock'));
    expect(warnings.map((record) => [record.generationId, record.source, record.msg])).toEqual([
      [rawId(followUp.id), 'GenerationPipeline', "left out files of the parent's version whose paths Kiln now refuses"],
      [rawId(restore.id), 'GenerationPipeline', 'left out files of the restored version whose paths Kiln now refuses'],
    ]);
  });
});
