import type { KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { finished } from 'node:stream';
import { Counter } from 'prom-client';
import type { Db } from '../db/client.js';
import { serviceScope } from '../db/scope.js';
import { isTerminal } from '../generations/status.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { type ArchiveEntry, type ArchiveFormat, archiveContentType, archiveFilename, writeArchive } from './archive.js';
import type { BlobStore } from './blob-store.js';
import { DownloadsBusyError } from './local-cache.js';
import { manifestCache } from './manifest-cache.js';
import { manifestStore } from './manifest-store.js';
import { type Manifest, plain, redirectToFolder, servePreview } from './preview.js';
import { verifyCapability } from './signed-urls.js';

// The HTTP side of outputs: /preview/<capability>/… and /archive/<capability>/<name>,
// answered only for a valid, unexpired capability of the right kind.

/** Headers of every preview response: generated code is untrusted and runs in an opaque origin. */
const PREVIEW_HEADERS = {
  'Content-Security-Policy': 'sandbox allow-scripts allow-forms allow-popups allow-modals',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  // A sandboxed document's fetch() and module scripts are cross-origin requests.
  'Access-Control-Allow-Origin': '*',
  'Cache-Control': 'private, no-cache',
} as const;

const MANIFEST_TTL_MS = 60_000;
const MANIFESTS_KEPT = 200;
// Bundle paths are capped (write-outputs.ts), so the largest manifest is a few MB.
const MANIFEST_BYTES_KEPT = 32 * 1024 * 1024;

export interface OutputHandlers {
  /** Answers preview and archive requests (and on PREVIEW_ORIGIN every request); false leaves it to the API. */
  route(req: IncomingMessage, res: ServerResponse): boolean;
  /** Whether a request is addressed to PREVIEW_ORIGIN, where nothing of the API answers (WebSocket upgrades included). */
  onPreviewOrigin(req: IncomingMessage): boolean;
  /** Drops the manifests kept in memory (after a collection). */
  forget(): void;
}

export function outputHandlers(deps: {
  key: KeyObject;
  store: BlobStore;
  db: Db;
  logger: Logger;
  metrics: Metrics;
  /** PREVIEW_ORIGIN, when previews have an origin of their own. */
  previewOrigin?: string;
  /** Archive downloads sent at once, by this process and of one generation (default ARCHIVES_AT_ONCE, below). */
  archivesAtOnce?: ArchiveSlots;
}): OutputHandlers {
  const { key, store } = deps;
  const previewOrigin = deps.previewOrigin === undefined ? undefined : new URL(deps.previewOrigin);
  const scope = serviceScope(deps.db);
  const log = deps.logger;
  const requests = new Counter({
    name: 'kiln_output_requests_total',
    help: 'Preview and archive requests answered, by kind and status.',
    labelNames: ['kind', 'status'] as const,
    registers: [deps.metrics.registry],
  });
  const bytesSent = new Counter({
    name: 'kiln_output_bytes_total',
    help: 'Bytes of preview and archive responses sent (headers included), by kind.',
    labelNames: ['kind'] as const,
    registers: [deps.metrics.registry],
  });
  // Bundles never change once stored; kept a minute so a deleted project stops serving soon.
  const manifests = manifestCache({ ttlMs: MANIFEST_TTL_MS, entries: MANIFESTS_KEPT, bytes: MANIFEST_BYTES_KEPT });

  const takeArchiveSlot = archiveSlots(deps.archivesAtOnce ?? ARCHIVES_AT_ONCE);

  // The first requests for a fresh preview (its page and every asset at once) share one read.
  const manifestOf = (generationId: string): Promise<Manifest | undefined> =>
    manifests.load(generationId, () => scope.run((tx) => manifestStore.entriesOf(tx, generationId, 'BUNDLE')));

  /** Counts what a handler sends, then records it once the response is over. */
  const observe = (kind: 'preview' | 'archive', req: IncomingMessage, res: ServerResponse, work: () => Promise<number>) => {
    const started = performance.now();
    // What the socket sent for this response (headers included); keep-alive requests on it come one after another.
    const socket = res.socket;
    const sentBefore = socket?.bytesWritten ?? 0;
    res.once('close', () => {
      const status = res.statusCode;
      const bytes = (socket?.bytesWritten ?? 0) - sentBefore;
      requests.inc({ kind, status: String(status) });
      bytesSent.inc({ kind }, bytes);
      if (log.isLevelEnabled('info')) {
        // The capability stays out of the log: whoever reads it could use the URL.
        const path = req.url?.replace(/^\/(preview|archive)\/[^/?]+/, '/$1/…');
        log.info({ kind, path, status, bytes, ms: Math.round(performance.now() - started) }, `${kind} request`);
      }
    });
    work().catch((error: unknown) => {
      if (clientWentAway(res, error)) {
        // A download or page the client stopped mid-response: nothing failed, and nobody is there to answer.
        log.debug({ kind, code: (error as NodeJS.ErrnoException).code }, 'output request ended by the client');
        res.destroy();
        return;
      }
      log.error({ err: error, kind }, 'output request failed');
      plain(res, 500, 'Something went wrong.');
    });
  };

  const refuse = (res: ServerResponse, reason: 'malformed' | 'forged' | 'expired') =>
    reason === 'expired' ? plain(res, 410, 'This link has expired; ask Kiln for a new one.') : plain(res, reason === 'forged' ? 403 : 404, 'Not found.');

  const preview = (req: IncomingMessage, res: ServerResponse, token: string, rest: string | undefined) =>
    observe('preview', req, res, async () => {
      for (const [name, value] of Object.entries(PREVIEW_HEADERS)) res.setHeader(name, value);
      const preflight = req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
      if (req.method !== 'GET' && req.method !== 'HEAD' && !preflight) {
        res.setHeader('Allow', 'GET, HEAD');
        return plain(res, 405, 'Method not allowed.');
      }
      const verified = verifyCapability(key, 'preview', token);
      if (!verified.ok) return refuse(res, verified.reason);
      // The page's own fetch() with a header beyond the simple ones (Content-Type: application/json)
      // asks first, its origin being opaque: a GET or HEAD with any header may follow.
      if (preflight) {
        res.writeHead(204, { 'Access-Control-Allow-Methods': 'GET, HEAD', 'Access-Control-Allow-Headers': '*', 'Access-Control-Max-Age': '600' }).end();
        return 204;
      }
      // /preview/<token> becomes /preview/<token>/.
      if (rest === undefined) return redirectToFolder(req, res, `/preview/${token}/`);
      const generationId = verified.capability.generationId;
      const manifest = await manifestOf(generationId);
      if (!manifest) return plain(res, 404, 'This generation has no web bundle.');
      return servePreview({ req, res, rest, root: `/preview/${token}/`, manifest, store, generationId }).catch((error: unknown) => {
        if (!(error instanceof DownloadsBusyError)) throw error;
        // Only the generation's own downloads are ahead of it: told to ask again rather than held.
        deps.metrics.observeRefusal('preview_downloads');
        res.setHeader('Retry-After', '1');
        return plain(res, 503, 'Busy fetching this preview; try again shortly.');
      });
    });

  const archive = (req: IncomingMessage, res: ServerResponse, token: string, name: string) =>
    observe('archive', req, res, async () => {
      res.setHeader('X-Content-Type-Options', 'nosniff');
      res.setHeader('Referrer-Policy', 'no-referrer');
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        return plain(res, 405, 'Method not allowed.');
      }
      const format: ArchiveFormat | undefined = name.endsWith('.zip') ? 'ZIP' : name.endsWith('.tar.gz') ? 'TAR_GZ' : undefined;
      if (!format) return plain(res, 404, 'Not found.');
      const verified = verifyCapability(key, format === 'ZIP' ? 'zip' : 'tar.gz', token);
      if (!verified.ok) return refuse(res, verified.reason);
      const generationId = verified.capability.generationId;
      const { facts, sources } = await scope.run(async (tx) => ({
        facts: await manifestStore.archiveFacts(tx, generationId),
        sources: await manifestStore.sourcesOf(tx, generationId),
      }));
      if (!facts || sources.length === 0) return plain(res, 404, 'Not found.');
      // Its files are read one by one as the archive reaches them: a fix round in between would cut the download short or mix two versions.
      if (!isTerminal(facts.status)) return plain(res, 409, 'The generation is still running; download it once it has ended.');
      if (req.method === 'GET') {
        const release = takeArchiveSlot(generationId);
        if (!release) {
          deps.metrics.observeRefusal('archive_downloads');
          res.setHeader('Retry-After', '5');
          return plain(res, 503, 'Too many downloads at once; try again shortly.');
        }
        // Also when the client has gone already (during the reads above): then 'close' came before any listener.
        finished(res, release);
      }
      const filename = archiveFilename(facts.projectName, generationId, format);
      res.writeHead(200, {
        'Content-Type': archiveContentType[format],
        'Content-Disposition': `attachment; filename="${filename}"`,
        'Cache-Control': 'private, no-store',
      });
      if (req.method === 'HEAD') {
        res.end();
        return 200;
      }
      const entries: ArchiveEntry[] = sources.map((file) => ({
        path: file.path,
        size: file.size,
        content: async () => {
          const content = file.stored
            ? await store.read(file.sha256)
            : await scope.run((tx) => manifestStore.fileContent(tx, generationId, file.path)).then((text) => (text === undefined ? undefined : Buffer.from(text, 'utf8')));
          if (!content) throw new Error(`The content of ${file.path} (${file.sha256}) is missing from the artefact store`);
          return content;
        },
      }));
      await writeArchive(format, entries, facts.finishedAt ?? facts.createdAt, res);
      return 200;
    });

  const onPreviewOrigin = (req: IncomingMessage) => previewOrigin !== undefined && isHostOf(previewOrigin, req.headers.host);

  return {
    route: (req, res) => {
      const path = (req.url ?? '/').split('?')[0]!;
      const previewHost = onPreviewOrigin(req);
      const previewMatch = /^\/preview\/([^/]+)(?:\/(.*))?$/.exec(path);
      if (previewMatch && (previewOrigin === undefined || previewHost)) {
        preview(req, res, previewMatch[1]!, previewMatch[2]);
        return true;
      }
      if (previewHost || previewMatch) {
        // The preview origin serves previews only, and the API's origin none.
        for (const [name, value] of Object.entries(PREVIEW_HEADERS)) res.setHeader(name, value);
        plain(res, 404, 'Not found.');
        return true;
      }
      const archiveMatch = /^\/archive\/([^/]+)\/([^/]+)$/.exec(path);
      if (archiveMatch) {
        archive(req, res, archiveMatch[1]!, archiveMatch[2]!);
        return true;
      }
      return false;
    },
    onPreviewOrigin,
    forget: () => manifests.clear(),
  };
}

export interface ArchiveSlots {
  total: number;
  perGeneration: number;
}

/**
 * An archive being sent can hold a file (up to 1 MiB) while its client reads slowly, so a
 * process sends this many at once, and a few of one generation: one holder of a URL cannot take
 * every slot, nor the memory, with downloads it never reads.
 */
const ARCHIVES_AT_ONCE: ArchiveSlots = { total: 32, perGeneration: 4 };

/** Takes a slot for a generation's download: its release (idempotent), or undefined when none is free. */
function archiveSlots(limits: ArchiveSlots): (generationId: string) => (() => void) | undefined {
  const taken = new Map<string, number>();
  let total = 0;
  return (generationId) => {
    const mine = taken.get(generationId) ?? 0;
    if (total >= limits.total || mine >= limits.perGeneration) return undefined;
    taken.set(generationId, mine + 1);
    total += 1;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      total -= 1;
      const left = taken.get(generationId)! - 1;
      if (left > 0) taken.set(generationId, left);
      else taken.delete(generationId);
    };
  };
}

/**
 * Whether a request's Host names the origin: compared as URLs compare hosts, so the case of the
 * name and an explicit default port (`preview.example.com:443` for https) do not matter, nor
 * does the root's trailing dot (`preview.example.com.`), which DNS resolves to the same host.
 */
function isHostOf(origin: URL, host: string | undefined): boolean {
  // A Host is a name and a port: nothing a URL would read as user, path, query or fragment.
  if (!host || /[@/\\?#]/.test(host)) return false;
  const withoutRoot = (url: URL) => `${url.hostname.replace(/\.$/, '')}:${url.port}`;
  try {
    return withoutRoot(new URL(`${origin.protocol}//${host}`)) === withoutRoot(origin);
  } catch {
    return false;
  }
}

/** What writing to a response whose client has gone fails with. */
const CLIENT_GONE = new Set(['ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED', 'ECONNRESET', 'EPIPE']);

/**
 * Whether a response failed because its client went away once it had begun (closed the
 * connection mid-download), rather than because the server could not produce it: a store
 * that failed destroys the response with its own error, never with one of these.
 */
function clientWentAway(res: ServerResponse, error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return res.headersSent && !res.writableFinished && code !== undefined && CLIENT_GONE.has(code);
}
