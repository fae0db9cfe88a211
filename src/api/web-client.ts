import { existsSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import send from 'send';

// The reference web client (web/, built into web/dist by `npm run build:web`, which
// `npm install` runs through `prepare`) at `/`. Vite names every file under assets/ by
// its content hash, so those are cached for a year; index.html and the other files
// are revalidated (ETag) on every load, so a new build is picked up at once. Paths
// without an extension are the client's own routes (`/projects/<id>`): index.html.

const DIST = fileURLToPath(new URL('../../web/dist/', import.meta.url));
const HASHED = '/assets/';

/** Every page Kiln serves (this client, GraphiQL) is never framed, never sniffed and sends no referrer. */
export const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  // Previews come from PUBLIC_URL or PREVIEW_ORIGIN (both http(s)); nothing else leaves the page.
  'Content-Security-Policy':
    "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-src 'self' http: https:; " +
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
};

/** Answers GET/HEAD requests for the client; false when the request is not the client's. */
export function serveWebClient(req: IncomingMessage, res: ServerResponse, path: string): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  if (!existsSync(join(DIST, 'index.html'))) {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('The web client is not built: run `npm run build:web`.\n');
    return true;
  }
  const hashed = path.startsWith(HASHED);
  const file = hashed || extname(path) !== '' ? path : '/index.html';
  send(req, file, { root: DIST, index: false, dotfiles: 'deny', ...(hashed ? { immutable: true, maxAge: '1y' } : { cacheControl: false }) })
    .on('headers', (response: ServerResponse) => {
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) response.setHeader(name, value);
      if (!hashed) response.setHeader('Cache-Control', 'no-cache');
    })
    .on('error', (error: { status?: number }) => {
      const status = error.status ?? 500;
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' }).end(status === 404 ? 'Not found\n' : 'Error\n');
    })
    .pipe(res);
  return true;
}
