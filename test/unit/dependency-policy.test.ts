import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prepareFetch } from '../../src/toolchain/dependency-policy.js';

// What a refusal quotes of the value it refuses; the policy itself is test/dependency-policy.test.ts.

let workspace: string;
beforeEach(async () => {
  workspace = await mkdtemp(join(tmpdir(), 'kiln-dependency-policy-'));
});
afterEach(async () => {
  await rm(workspace, { recursive: true, force: true });
});

/** The message prepareFetch refuses a package.json with, whose one dependency is `spec`. */
async function refusalOf(spec: string): Promise<string> {
  await writeFile(join(workspace, 'package.json'), JSON.stringify({ name: 'app', dependencies: { leak: spec } }));
  const error = await prepareFetch('npm', workspace).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toMatchObject({ name: 'DependencyPolicyError', code: 'UNSAFE_OUTPUT' });
  return (error as Error).message;
}

describe('a refused dependency, as its refusal quotes it', () => {
  it('is quoted whole up to 121 characters', async () => {
    const spec = `file:${'a'.repeat(114)}`; // 121 characters as JSON, its quotes counted
    expect(await refusalOf(spec)).toContain(`asks for "leak" as ${JSON.stringify(spec)};`);
  });

  it('keeps its first 120 characters and an ellipsis when longer', async () => {
    const spec = `file:${'a'.repeat(400)}`;
    expect(await refusalOf(spec)).toContain(`asks for "leak" as ${JSON.stringify(spec).slice(0, 120)}…;`);
  });
});
