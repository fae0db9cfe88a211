import { join } from 'node:path';
import type { Config } from '../config.js';
import type { Db, Tx } from '../db/client.js';
import { serviceScope } from '../db/scope.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { ArchiveFormat } from './archive.js';
import type { BlobStore } from './blob-store.js';
import { fsBlobStore } from './fs-blob-store.js';
import { type OutputHandlers, outputHandlers } from './http-handlers.js';
import { localBlobCache } from './local-cache.js';
import { manifestStore } from './manifest-store.js';
import { postgresBlobStore } from './postgres-blob-store.js';
import { type CapabilityKind, loadUrlKey, signCapability } from './signed-urls.js';
import { storeOutputs } from './write-outputs.js';

// The outputs of generations as a person sees and keeps them, composed: the artefact
// store, the signed URLs handed out by GraphQL, the HTTP handlers that honour them
// (http-handlers.ts), and the collection of blobs no generation uses any more.

export interface SignedUrl {
  url: string;
  expiresAt: Date;
}

export interface Outputs {
  readonly store: BlobStore;
  /** The address Kiln listens on: the base of absolute URLs unless PUBLIC_URL is set. */
  listening(url: string): void;
  previewUrl(generationId: string): SignedUrl;
  archiveUrl(generationId: string, format: ArchiveFormat, filename: string): SignedUrl;
  route: OutputHandlers['route'];
  onPreviewOrigin: OutputHandlers['onPreviewOrigin'];
  /**
   * Stores a generation's files and web bundle (the worker, before SUCCEEDED; no bundle
   * without `bundleDir`); `record` indexes them in the caller's transaction, the one that
   * marks it SUCCEEDED.
   */
  storeBlobs(
    generationId: string,
    bundleDir: string | undefined,
    sources: readonly { path: string; content: string }[],
    /** The run's: once it is aborted (a cancel, a worker's stop), no more batches are stored. */
    signal?: AbortSignal,
  ): Promise<{ record(tx: Tx): Promise<void> }>;
  /** Removes blobs no generation uses any more (their projects were deleted), untouched for `graceMs`. */
  collect(graceMs?: number): Promise<number>;
  close(): Promise<void>;
}

const COLLECT_GRACE_MS = 60 * 60 * 1000;
const COLLECT_EVERY_MS = 60 * 60 * 1000;
const CACHE_UNUSED_MS = 24 * 60 * 60 * 1000;
/** How often every process prunes its local copies of remote blobs, whether or not it collects blobs. */
export const CACHE_PRUNE_EVERY_MS = 10 * 60 * 1000;

export async function createOutputs(options: {
  config: Config;
  db: Db;
  logger: Logger;
  metrics: Metrics;
  /** Collect orphan blobs every hour (worker processes); every process prunes its local copies of blobs. */
  collectPeriodically?: boolean;
}): Promise<Outputs> {
  const { config, db } = options;
  const settings = config.outputs;
  const log = options.logger.child({ source: 'Outputs' });
  const cache = localBlobCache(join(config.dataDir, 'artifact-cache'), {
    onWaiting: (waiting) => log.debug({ waiting }, 'a blob download waits for a turn'),
    onPruned: ({ removed, bytes }) => {
      if (removed > 0) log.info({ removed, bytes }, 'local copies of blobs pruned');
    },
  });
  const store: BlobStore =
    settings.store === 'fs'
      ? fsBlobStore(settings.dir)
      : settings.store === 'postgres'
        ? postgresBlobStore(db, cache)
        : await (await import('./supabase-blob-store.js')).supabaseBlobStore(
            { url: config.auth.supabase.url!, serviceRoleKey: config.auth.supabase.serviceRoleKey!, bucket: settings.bucket },
            cache,
          );
  const key = await loadUrlKey(db);
  const scope = serviceScope(db);
  let listenUrl = `http://${config.http.host}:${config.http.port}`;
  const apiBase = () => settings.publicUrl ?? listenUrl;
  const handlers = outputHandlers({
    key,
    store,
    db,
    logger: log,
    metrics: options.metrics,
    previewOrigin: settings.previewOrigin,
  });

  const sign = (kind: CapabilityKind, generationId: string) => {
    const expiresAt = new Date(Math.floor(Date.now() / 1000) * 1000 + settings.signedUrlTtlSeconds * 1000);
    return { token: signCapability(key, { kind, generationId, expiresAt }), expiresAt };
  };

  const collect = async (graceMs = COLLECT_GRACE_MS) => {
    const before = new Date(Date.now() - graceMs);
    let removed = 0;
    for await (const batch of store.list()) {
      const used = await scope.run((tx) => manifestStore.referenced(tx, batch.map((blob) => blob.sha256)));
      const orphans = batch.filter((blob) => !used.has(blob.sha256) && blob.touchedAt < before).map((blob) => blob.sha256);
      removed += await store.remove(orphans, before);
      await cache.drop(orphans);
    }
    await cache.prune(new Date(Date.now() - Math.max(graceMs, CACHE_UNUSED_MS)));
    handlers.forget();
    if (removed > 0) log.info({ removed }, 'orphan blobs collected');
    return removed;
  };
  const timer = options.collectPeriodically
    ? setInterval(() => void collect().catch((error: unknown) => log.warn({ err: error }, 'collecting orphan blobs failed')), COLLECT_EVERY_MS)
    : undefined;
  timer?.unref();
  // Every process that serves outputs copies remote blobs to its disk, API instances most of all.
  let pruning: Promise<unknown> = Promise.resolve();
  const pruneTimer = setInterval(() => {
    pruning = cache.prune(new Date(Date.now() - CACHE_UNUSED_MS)).catch((error: unknown) => log.warn({ err: error }, 'pruning local copies of blobs failed'));
  }, CACHE_PRUNE_EVERY_MS);
  pruneTimer.unref();

  return {
    store,
    listening: (url) => {
      listenUrl = url;
    },
    previewUrl: (generationId) => {
      const { token, expiresAt } = sign('preview', generationId);
      return { url: `${settings.previewOrigin ?? apiBase()}/preview/${token}/`, expiresAt };
    },
    archiveUrl: (generationId, format, filename) => {
      const { token, expiresAt } = sign(format === 'ZIP' ? 'zip' : 'tar.gz', generationId);
      return { url: `${apiBase()}/archive/${token}/${encodeURIComponent(filename)}`, expiresAt };
    },
    route: handlers.route,
    onPreviewOrigin: handlers.onPreviewOrigin,
    storeBlobs: async (generationId, bundleDir, sources, signal) => {
      const { rows, ...written } = await storeOutputs(store, generationId, bundleDir, sources, signal);
      log.info({ generationId, ...written }, 'outputs stored');
      return { record: (tx) => manifestStore.insert(tx, rows) };
    },
    collect,
    close: async () => {
      clearInterval(timer);
      clearInterval(pruneTimer);
      await pruning;
    },
  };
}
