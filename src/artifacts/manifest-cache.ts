import type { ArtifactEntry } from './manifest-store.js';
import type { Manifest } from './preview.js';

// What an entry holds besides its path (sha256 string, object, size, Map slot), about.
const ENTRY_OVERHEAD_BYTES = 200;

/**
 * Manifests kept in memory for `ttlMs`, at most `entries` of them and about `bytes` in all
 * (a bundle may hold 10,000 files, so a count alone bounds nothing); the oldest go first.
 */
export function manifestCache(limits: { ttlMs: number; entries: number; bytes: number }) {
  const kept = new Map<string, { manifest: Manifest; loadedAt: number; bytes: number }>();
  /** Loads under way: requests for one manifest at once share one read. */
  const pending = new Map<string, Promise<Manifest | undefined>>();
  let keptBytes = 0;
  const drop = (key: string) => {
    keptBytes -= kept.get(key)?.bytes ?? 0;
    kept.delete(key);
  };
  const get = (key: string): Manifest | undefined => {
    const found = kept.get(key);
    return found && Date.now() - found.loadedAt < limits.ttlMs ? found.manifest : undefined;
  };
  /** Keeps the entries as a manifest (unless it alone is over the budget) and returns it. */
  const set = (key: string, entries: readonly ArtifactEntry[]): Manifest => {
    const manifest = manifestOf(entries);
    // Paths counted as two-byte strings, the most a string can take.
    const bytes = entries.reduce((sum, entry) => sum + 2 * entry.path.length + ENTRY_OVERHEAD_BYTES, 0);
    drop(key);
    if (bytes > limits.bytes) return manifest;
    kept.set(key, { manifest, loadedAt: Date.now(), bytes });
    keptBytes += bytes;
    while (kept.size > limits.entries || keptBytes > limits.bytes) drop(kept.keys().next().value!);
    return manifest;
  };
  return {
    get,
    /**
     * The kept manifest, or the one `read` loads (none for no entries), kept for next time. Calls
     * for one key while a load is under way share it; a failed load is not kept, so the next call
     * reads again. A load under way when the cache is cleared or the key deleted is not kept either.
     */
    load(key: string, read: () => Promise<readonly ArtifactEntry[]>): Promise<Manifest | undefined> {
      const found = get(key);
      if (found) return Promise.resolve(found);
      let loading = pending.get(key);
      if (!loading) {
        const started: Promise<Manifest | undefined> = read()
          .then((entries) => {
            const current = pending.get(key) === started;
            if (entries.length === 0) {
              if (current) drop(key);
              return undefined;
            }
            return current ? set(key, entries) : manifestOf(entries);
          })
          .finally(() => {
            if (pending.get(key) === started) pending.delete(key);
          });
        loading = started;
        pending.set(key, loading);
      }
      return loading;
    },
    set,
    delete(key: string) {
      drop(key);
      pending.delete(key);
    },
    clear() {
      kept.clear();
      pending.clear();
      keptBytes = 0;
    },
  };
}

function manifestOf(entries: readonly ArtifactEntry[]): Manifest {
  return new Map(entries.map((entry) => [entry.path, entry]));
}
