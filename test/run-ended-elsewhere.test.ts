import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { fsBlobStore } from '../src/artifacts/fs-blob-store.js';
import { manifestStore } from '../src/artifacts/manifest-store.js';
import { storeOutputs } from '../src/artifacts/write-outputs.js';
import { serviceScope } from '../src/db/scope.js';
import { generationStore } from '../src/generations/store.js';
import { databaseKind } from './support/db.js';
import { document } from './support/fixtures.js';
import { fakeFlutter, queuedOnApiInstance, rawId, startOwnWorker } from './support/generation-helpers.js';

// A run whose generation was ended elsewhere (lease recovery took it for dead, or an archive
// cancelled it) while it stored its outputs: its SUCCEEDED ending is not written, and neither
// is what would have made a preview and an archive of it.

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const GenerationPreviewDocument = document<{ generation: { status: string; error: { code: string } | null; preview: { url: string } | null } | null }, { id: string }>(
  'query GenerationPreview($id: ID!) { generation(id: $id) { status error { code } preview { url } } }',
);

const OVERSHOT = 1_000_000;

describe(`a run ended elsewhere while it stored its outputs (${databaseKind})`, () => {
  it('keeps the ending it found: no preview for a generation that did not succeed', async () => {
    const { database, dataDir, owner, started } = await queuedOnApiInstance(cleanups as (() => Promise<void>)[], 'A counter app');
    const id = rawId(started.id);
    const flutter = await fakeFlutter('ok');
    cleanups.push(() => flutter.remove());
    const worker = await startOwnWorker(database, { OFFLINE_CHUNK_DELAY_MS: '0', DATA_DIR: dataDir, FLUTTER_BIN: flutter.bin }, {
      outputs: {
        storeBlobs: async (generationId, bundleDir, sources) => {
          const { rows } = await storeOutputs(fsBlobStore(join(dataDir, 'artifacts')), generationId, bundleDir, sources);
          // Lease recovery takes the run for dead here, between the build and the ending, charging
          // what its heartbeat last recorded (an estimate that overshot, say).
          await database.db.execute(
            sql`update generations set lease_expires_at = now() - interval '1 second', spent_input_tokens = ${OVERSHOT}, spent_output_tokens = ${OVERSHOT} where id = ${generationId}`,
          );
          const ended = await serviceScope(database.db).run((tx) => generationStore.interruptLapsed(tx));
          expect(ended.map((row) => [row.id, row.inputTokens])).toEqual([[generationId, OVERSHOT]]);
          return { record: (tx) => manifestStore.insert(tx, rows) };
        },
      },
    });
    cleanups.push(() => worker.stop({ graceMs: 0 }));
    worker.wake(id);
    // The grace lets the claimed run go to its end.
    await worker.stop({ graceMs: 3_600_000 });

    const ending = await serviceScope(database.db).run((tx) => generationStore.find(tx, id));
    expect(ending).toMatchObject({ status: 'FAILED', errorCode: 'INTERRUPTED' });
    // The run's own count, later and whole, replaced what recovery charged.
    expect(ending!.inputTokens).toBeGreaterThan(0);
    expect(ending!.inputTokens).toBeLessThan(OVERSHOT);
    expect(ending!.outputTokens).toBeLessThan(OVERSHOT);
    const { generation } = await owner.client.expectNoErrors(GenerationPreviewDocument, { id: started.id });
    expect(generation).toEqual({ status: 'FAILED', error: { code: 'INTERRUPTED' }, preview: null });
  });
});
