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
  let keptBytes = 0;
  const drop = (key: string) => {
    keptBytes -= kept.get(key)?.bytes ?? 0;
    kept.delete(key);
  };
  return {
    get(key: string): Manifest | undefined {
      const found = kept.get(key);
      return found && Date.now() - found.loadedAt < limits.ttlMs ? found.manifest : undefined;
    },
    /** Keeps the entries as a manifest (unless it alone is over the budget) and returns it. */
    set(key: string, entries: readonly ArtifactEntry[]): Manifest {
      const manifest: Manifest = new Map(entries.map((entry) => [entry.path, entry]));
      // Paths counted as two-byte strings, the most a string can take.
      const bytes = entries.reduce((sum, entry) => sum + 2 * entry.path.length + ENTRY_OVERHEAD_BYTES, 0);
      drop(key);
      if (bytes > limits.bytes) return manifest;
      kept.set(key, { manifest, loadedAt: Date.now(), bytes });
      keptBytes += bytes;
      while (kept.size > limits.entries || keptBytes > limits.bytes) drop(kept.keys().next().value!);
      return manifest;
    },
    delete: drop,
    clear() {
      kept.clear();
      keptBytes = 0;
    },
  };
}
