import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type GraphiQLOptions, type Plugin, shouldRenderGraphiQL } from 'graphql-yoga';
import { SECURITY_HEADERS } from './web-client.js';

// GraphiQL from Kiln alone: the scripts, styles, editor workers and favicon that
// @graphql-yoga/render-graphiql bundles are served under /graphiql/ with content-hashed
// names and a year of caching, and the page at GET /graphql only points at them. (The
// package's own page inlines all 9 MB into every load.) Nothing comes from a CDN.

const PREFIX = '/graphiql/';

interface Asset {
  body: Buffer;
  type: string;
}

type Assets = { byPath: Map<string, Asset>; urls: Record<'js' | 'css' | 'favicon' | 'editor' | 'json' | 'graphql', string> };

/** name-hash.ext → asset; built on first use, not at import (the package is 9 MB of source: loading it would slow every start). */
let assets: Promise<Assets> | null = null;

function loadAssets(): Promise<Assets> {
  assets ??= buildAssets();
  return assets;
}

async function buildAssets(): Promise<Assets> {
  const { css, editorWorkerService, favicon, graphqlWorker, js, jsonWorker } = await import('@graphql-yoga/render-graphiql/graphiql');
  const byPath = new Map<string, Asset>();
  const add = (name: string, ext: string, type: string, body: Buffer) => {
    const path = `${PREFIX}${name}-${createHash('sha256').update(body).digest('hex').slice(0, 12)}.${ext}`;
    byPath.set(path, { body, type });
    return path;
  };
  const script = 'text/javascript; charset=utf-8';
  const [faviconType = 'image/x-icon', faviconData = ''] = favicon.replace(/^data:/, '').split(';base64,');
  return {
    byPath,
    urls: {
      js: add('graphiql', 'js', script, Buffer.from(js)),
      css: add('graphiql', 'css', 'text/css; charset=utf-8', Buffer.from(css)),
      favicon: add('favicon', 'ico', faviconType, Buffer.from(faviconData, 'base64')),
      editor: add('editor.worker', 'js', script, Buffer.from(editorWorkerService)),
      json: add('json.worker', 'js', script, Buffer.from(jsonWorker)),
      graphql: add('graphql.worker', 'js', script, Buffer.from(graphqlWorker)),
    },
  };
}

/** JSON inside a <script>: `<` escaped so a `</script>` in the example document cannot end it. */
const scriptJson = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');

const escapeHtml = (value: string) => value.replace(/[&<>"]/g, (ch) => `&#${ch.charCodeAt(0)};`);

/** The GraphiQL page (Yoga's `renderGraphiQL` option): the package's page, with its assets by URL. */
export async function renderGraphiQLPage(options: GraphiQLOptions): Promise<string> {
  const { urls } = await loadAssets();
  const workers = { editorWorkerService: urls.editor, json: urls.json, graphql: urls.graphql };
  return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>${escapeHtml(options.title ?? 'GraphiQL')}</title>
    <link rel="icon" href="${urls.favicon}" />
    <link rel="stylesheet" href="${urls.css}" />
  </head>
  <body id="body" class="no-focus-outline">
    <noscript>You need to enable JavaScript to run this app.</noscript>
    <div id="root"></div>
    <script>
      const workers = ${scriptJson(workers)};
      self.MonacoEnvironment = { globalAPI: false, getWorkerUrl: (moduleId, label) => workers[label] };
    </script>
    <script src="${urls.js}"></script>
    <script>
      YogaGraphiQL.renderYogaGraphiQL(document.querySelector('#root'), ${scriptJson(options)});
    </script>
  </body>
</html>
`;
}

/**
 * The web client's security headers on the GraphiQL page, so no other site can frame it
 * with a mutation filled in and have it run by a click. Its own Content-Security-Policy is
 * frame-ancestors alone: the page runs inline scripts and Monaco inline styles.
 */
const PAGE_HEADERS = { ...SECURITY_HEADERS, 'Content-Security-Policy': "frame-ancestors 'none'" };

export function useGraphiQLHeaders(): Plugin {
  return {
    onResponse({ request, response }) {
      if (!shouldRenderGraphiQL(request) || !response.headers.get('content-type')?.startsWith('text/html')) return;
      for (const [name, value] of Object.entries(PAGE_HEADERS)) response.headers.set(name, value);
    },
  };
}

/** Answers GET/HEAD /graphiql/<asset>; false when the request is not for one. */
export function serveGraphiQLAsset(req: IncomingMessage, res: ServerResponse, path: string): boolean {
  if (!path.startsWith(PREFIX) || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
  loadAssets().then(
    (loaded) => sendAsset(req, res, loaded.byPath.get(path)),
    () => {
      // The package failed to load: try again on the next request rather than keep the failure.
      assets = null;
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('GraphiQL could not be loaded\n');
    },
  );
  return true;
}

function sendAsset(req: IncomingMessage, res: ServerResponse, asset: Asset | undefined) {
  if (!asset) {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('Not found\n');
    return;
  }
  res.writeHead(200, {
    'content-type': asset.type,
    'content-length': asset.body.length,
    'cache-control': 'public, max-age=31536000, immutable',
    'x-content-type-options': 'nosniff',
  });
  res.end(req.method === 'HEAD' ? undefined : asset.body);
}
