import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import send from 'send';
import type { BlobStore } from './blob-store.js';
import { contentTypeOf } from './content-types.js';
import type { ArtifactEntry } from './manifest-store.js';

// Serves one generation's web bundle under /preview/<capability>/. The bundle is a
// manifest (path → blob) from the database; bytes come from the blob store's local
// files through `send` (content types, ranges, conditional requests), with the blob's
// sha256 as the ETag. Nothing outside the manifest can be named, so no path leads out
// of the bundle.

export type Manifest = Map<string, ArtifactEntry>;

const MAX_REWRITTEN_INDEX_BYTES = 1024 * 1024;

export interface PreviewRequest {
  req: IncomingMessage;
  res: ServerResponse;
  /** The URL path below the capability, still percent-encoded, without the leading slash. */
  rest: string;
  /** The path of the preview's root, e.g. `/preview/<capability>/`: the base of relative URLs. */
  root: string;
  manifest: Manifest;
  store: BlobStore;
  /** Whose bundle it is: remote blobs are downloaded in its turns. */
  generationId: string;
}

/** Resolves to the status sent. */
/** 308 to `folder` (a path ending in `/`), the request's query kept: relative URLs resolve against the folder. */
export function redirectToFolder(req: IncomingMessage, res: ServerResponse, folder: string): number {
  const query = req.url?.includes('?') ? req.url.slice(req.url.indexOf('?')) : '';
  res.writeHead(308, { Location: `${folder}${query}` }).end();
  return 308;
}

export async function servePreview(request: PreviewRequest): Promise<number> {
  const { req, res, manifest } = request;
  const path = decodePath(request.rest);
  if (path === null) return plain(res, 400, 'Bad path.');
  // A folder named without its slash: relative URLs in its index.html would resolve one level up.
  if (path !== '' && !path.endsWith('/') && !manifest.has(path) && manifest.has(`${path}/index.html`)) {
    return redirectToFolder(req, res, `${request.root}${request.rest}/`);
  }
  const entry = resolve(manifest, path);
  if (!entry) return plain(res, 404, 'Not found.');
  // A larger entry document is no app's: it is served as built rather than read and rewritten per request.
  if (entry.path === 'index.html' && entry.size <= MAX_REWRITTEN_INDEX_BYTES) return serveIndex(request, entry);
  const file = await request.store.localPath(entry.sha256, request.generationId);
  if (!file) return plain(res, 404, 'Not found.');
  // Without a Last-Modified, `send` fails any If-Unmodified-Since with 412, where RFC 9110
  // (13.1.4) says to ignore it: the ETag stands for the content, and If-Match still applies.
  delete req.headers['if-unmodified-since'];
  return new Promise<number>((done) => {
    // `send` percent-decodes its path: the folder (DATA_DIR's, whatever it is named) goes as
    // `root`, which it takes as is, and only the blob's name, a hex sha256, as the path.
    send(req, basename(file), { root: dirname(file), dotfiles: 'allow', index: false, cacheControl: false, etag: false, lastModified: false, acceptRanges: true })
      .on('headers', (response: ServerResponse) => {
        response.setHeader('Content-Type', contentTypeOf(entry.path));
        // From the content, never the local copy's mtime: stores and the cache touch it to keep
        // it from collection, and a validator that changed would defeat 304s and resumed downloads.
        response.setHeader('ETag', `"${entry.sha256}"`);
      })
      .on('error', (error: { status?: number }) => done(plain(res, error.status ?? 500, error.status === 416 ? 'Range not satisfiable.' : 'Not found.')))
      .on('end', () => done(res.statusCode))
      .pipe(res);
    res.once('close', () => done(res.statusCode));
  });
}

/** Segments decoded one by one; `..`, `.`, empty inner segments, slashes or NUL inside a segment are refused. */
function decodePath(rest: string): string | null {
  const segments = rest.split('/');
  const decoded: string[] = [];
  for (const [index, segment] of segments.entries()) {
    let text: string;
    try {
      text = decodeURIComponent(segment);
    } catch {
      return null;
    }
    if (text === '' && index === segments.length - 1) {
      decoded.push('');
      continue;
    }
    if (text === '' || text === '.' || text === '..' || /[/\\\0]/.test(text)) return null;
    decoded.push(text);
  }
  return decoded.join('/');
}

/** The file, a folder's index.html, or for a client-side route (no extension) the app's index.html. */
function resolve(manifest: Manifest, path: string): ArtifactEntry | undefined {
  if (path === '' || path.endsWith('/')) return manifest.get(`${path}index.html`);
  const found = manifest.get(path);
  if (found) return found;
  const name = path.slice(path.lastIndexOf('/') + 1);
  return name.includes('.') ? undefined : manifest.get('index.html');
}

/** The app's entry document, with its base set to the preview's root so relative URLs resolve there. */
async function serveIndex({ req, res, root, store, generationId }: PreviewRequest, entry: ArtifactEntry): Promise<number> {
  const file = await store.localPath(entry.sha256, generationId);
  if (!file) return plain(res, 404, 'Not found.');
  const body = Buffer.from(withBase((await readFile(file)).toString('utf8'), root), 'utf8');
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
  res.setHeader('ETag', etag);
  res.setHeader('Content-Type', contentTypeOf('index.html'));
  // As `send` does (the `fresh` rules): a request that asks for no-cache gets the document.
  const revalidating = !/(?:^|,)\s*no-cache\s*(?:,|$)/.test(req.headers['cache-control'] ?? '');
  // `*` matches any current representation (RFC 9110 13.1.2), as in `send`.
  if (revalidating && req.headers['if-none-match']?.split(/\s*,\s*/).some((tag) => tag === '*' || tag.replace(/^W\//, '') === etag)) {
    res.writeHead(304).end();
    return 304;
  }
  res.setHeader('Content-Length', body.length);
  res.writeHead(200).end(req.method === 'HEAD' ? undefined : body);
  return 200;
}

/**
 * Flutter writes `<base href="/">` unless built with --base-href, and a Vite build
 * with the default base points at `/assets/…`: both would leave the preview's path.
 * The document gets `<base href="<root>">` (unless the app set a base URL of its own) and
 * root-relative references become relative.
 * Generated code writes the document, so the work is linear in its length, whatever it holds.
 */
export function withBase(html: string, root: string): string {
  const base = `<base href="${root}">`;
  const out = html.replace(/(\s(?:src|href)=["'])\/(?!\/)/gi, '$1./');
  let head: Tag | undefined;
  let ownBase = false;
  for (const tag of baseAndHeadTags(out)) {
    if (tag.name === 'head') head ??= tag;
    else if (/href=["']\.\/["']/i.test(out.slice(tag.start, tag.end))) return `${out.slice(0, tag.start)}${base}${out.slice(tag.end)}`;
    // The app chose its own base URL; a <base target> alone sets none.
    else if (/[\s"']href\s*=/i.test(out.slice(tag.start, tag.end))) ownBase = true;
  }
  if (ownBase) return out;
  if (head) return `${out.slice(0, head.end)}${base}${out.slice(head.end)}`;
  const doctype = /^\s*<!doctype[^>]*>/i.exec(out);
  return doctype ? `${doctype[0]}${base}${out.slice(doctype[0].length)}` : `${base}${out}`;
}

interface Tag {
  name: 'base' | 'head';
  start: number;
  /** Just after its `>`. */
  end: number;
}

/** The `<base …>` and `<head…>` tags in order, in one pass that never steps back. */
function* baseAndHeadTags(html: string): Generator<Tag> {
  const opening = /<(?:(base)\s|head[\s>])/gi;
  for (let found = opening.exec(html); found; found = opening.exec(html)) {
    const end = html.indexOf('>', found.index + 1);
    if (end === -1) return; // an unclosed tag, and nothing after it is a tag
    yield { name: found[1] ? 'base' : 'head', start: found.index, end: end + 1 };
    opening.lastIndex = end + 1;
  }
}

export function plain(res: ServerResponse, status: number, message: string): number {
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(message) }).end(message);
  return status;
}
