import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { signCapability, loadUrlKey } from '../src/artifacts/signed-urls.js';
import { GenerationArchiveDocument, GenerationPreviewDocument } from './gql/graphql.js';
import { unzip } from './support/archives.js';
import { databaseKind } from './support/db.js';
import { createProject, signUp } from './support/fixtures.js';
import { rawId, startAccepted, startInstance, waitForEnd } from './support/generation-helpers.js';
import { RawSocket, UpgradeRefused } from './support/live.js';
import { rawGet } from './support/raw-http.js';
import { startSuiteServer, useGenerationServer } from './support/suite-server.js';

// The built app as a person sees it: Generation.preview hands out a signed URL that
// serves the FLUTTER bundle (fake flutter) with the sandbox headers, ETags and ranges,
// client-side routes, and nothing else: no tampered, expired or wrong-kind URL, no way
// out of the bundle.

const SANDBOX = 'sandbox allow-scripts allow-forms allow-popups allow-modals';
const CHROMIUM = '/usr/bin/chromium';

describe(`previews of a FLUTTER generation (${databaseKind})`, () => {
  const suite = useGenerationServer({ SIGNED_URL_TTL_SECONDS: '600' });
  let previewUrl: string;
  let generationId: string;
  const prompt = 'A plant watering planner';

  beforeAll(async () => {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt });
    const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
    expect(generation.status, JSON.stringify(generation.error)).toBe('SUCCEEDED');
    generationId = generation.id;
    const { generation: withPreview } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: generationId });
    previewUrl = withPreview!.preview!.url;
  }, 60_000);

  const pathOf = (url: string) => new URL(url).pathname;

  it('gives members a short-lived URL under the server address that serves the app with the sandbox headers', async () => {
    const asked = Date.now();
    const { generation } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: generationId });
    const answered = Date.now();
    // SIGNED_URL_TTL_SECONDS (600) from the moment the URL was signed, somewhere within the request.
    const expiresAt = new Date(generation!.preview!.expiresAt).getTime();
    expect(expiresAt).toBeGreaterThanOrEqual(Math.floor(asked / 1000) * 1000 + 600_000);
    expect(expiresAt).toBeLessThanOrEqual(answered + 600_000);
    expect(previewUrl.startsWith(`${suite.server.url}/preview/`)).toBe(true);

    const page = await fetch(previewUrl);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toBe(SANDBOX);
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(page.headers.get('referrer-policy')).toBe('no-referrer');
    expect(page.headers.get('access-control-allow-origin')).toBe('*');
    const html = await page.text();
    // Flutter's <base href="/"> now points at the preview's own path.
    expect(html).toContain(`<base href="${pathOf(previewUrl)}">`);
    expect(html).not.toContain('<base href="/">');
    expect(html).toContain(prompt);

    const script = await fetch(`${previewUrl}main.dart.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(script.headers.get('content-security-policy')).toBe(SANDBOX);
    expect(await script.text()).toContain("fetch('assets/AssetManifest.json')");
    const svg = await fetch(`${previewUrl}assets/logo.svg`);
    expect(svg.headers.get('content-type')).toBe('image/svg+xml; charset=utf-8');
  });

  it('answers conditional and range requests', async () => {
    const url = `${previewUrl}assets/AssetManifest.json`;
    const full = await fetch(url);
    const body = await full.text();
    const etag = full.headers.get('etag');
    expect(etag).toBeTruthy();
    expect(full.headers.get('accept-ranges')).toBe('bytes');
    // A browser revalidating (fetch() would add `Cache-Control: no-cache` to a conditional request).
    const again = await rawGet(suite.server.url, pathOf(url), { 'if-none-match': etag! });
    expect(again.status).toBe(304);
    expect(again.headers['content-security-policy']).toBe(SANDBOX);
    const part = await fetch(url, { headers: { range: 'bytes=2-9' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 2-9/${Buffer.byteLength(body)}`);
    expect(await part.text()).toBe(body.slice(2, 10));
    const unsatisfiable = await fetch(url, { headers: { range: 'bytes=100000-' } });
    expect(unsatisfiable.status).toBe(416);

    const index = await fetch(previewUrl);
    const indexTag = index.headers.get('etag');
    expect((await rawGet(suite.server.url, pathOf(previewUrl), { 'if-none-match': indexTag! })).status).toBe(304);
    expect((await rawGet(suite.server.url, pathOf(previewUrl), { 'if-none-match': '"other"' })).status).toBe(200);
  });

  it('serves index.html for client-side routes, and neither folders nor missing files', async () => {
    const route = await fetch(`${previewUrl}plants/42/schedule`);
    expect(route.status).toBe(200);
    expect(await route.text()).toContain(`<base href="${pathOf(previewUrl)}">`);
    expect((await fetch(`${previewUrl}missing.js`)).status).toBe(404);
    // No listing of a folder.
    const folder = await fetch(`${previewUrl}assets/`);
    expect(folder.status).toBe(404);
    expect(await folder.text()).not.toContain('logo.svg');
    // Without the trailing slash, relative URLs would resolve one level up: redirected.
    const bare = await fetch(previewUrl.slice(0, -1), { redirect: 'manual' });
    expect(bare.status).toBe(308);
    expect(bare.headers.get('location')).toBe(pathOf(previewUrl));
    // The query the app was opened with goes along.
    const withQuery = await fetch(`${previewUrl.slice(0, -1)}?tab=2`, { redirect: 'manual' });
    expect([withQuery.status, withQuery.headers.get('location')]).toEqual([308, `${pathOf(previewUrl)}?tab=2`]);
  });

  it('serves nothing outside the bundle, however the path is written', async () => {
    const root = pathOf(previewUrl);
    // The workspace holds pubspec.yaml and lib/main.dart beside build/web; the server has package.json.
    const attempts = [
      '../../pubspec.yaml',
      '..%2f..%2fpubspec.yaml',
      '%2e%2e/%2e%2e/pubspec.yaml',
      '%2E%2E%2F%2E%2E%2Flib%2Fmain.dart',
      'assets/..%2F..%2F..%2Fpubspec.yaml',
      '..%5c..%5cpubspec.yaml',
      'assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/package.json',
      '%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd',
      'index.html%00.js',
      '%ff',
      '/etc/passwd',
    ];
    for (const attempt of attempts) {
      const response = await rawGet(suite.server.url, `${root}${attempt}`);
      expect([400, 404], `${attempt} → ${response.status}`).toContain(response.status);
      expect(response.headers['content-security-policy']).toBe(SANDBOX);
      const text = response.body.toString('utf8');
      expect(text).not.toContain('kiln_app');
      expect(text).not.toContain('root:');
      expect(text).not.toContain('"name"');
    }
    // A literal `..` segment normalised away by the client stays inside (and is just a client route).
    const normalised = await rawGet(suite.server.url, `/preview/x/../${root.split('/')[2]}/index.html`);
    expect(normalised.status).toBe(404);
  });

  it('refuses tampered, expired and wrong-kind URLs with a 4xx and serves nothing', async () => {
    const token = pathOf(previewUrl).split('/')[2]!;
    const [uuid, expires, signature] = token.split('.') as [string, string, string];
    const flip = (text: string) => `${text.slice(0, -1)}${text.at(-1) === 'A' ? 'B' : 'A'}`;
    const key = await loadUrlKey(suite.server.database.db);
    const other = await startAccepted(suite.owner.client, { projectId: (await createProject(suite.owner.client, { target: 'FLUTTER' })).id, prompt: 'Another app' });
    const forged = [
      `${uuid}.${expires}.${flip(signature)}`,
      `${uuid}.${Number(expires) + 3600}.${signature}`,
      `${rawId(other.id)}.${expires}.${signature}`,
      `${uuid}.${expires}`,
      'not-a-token',
    ];
    for (const bad of forged) {
      const response = await fetch(`${suite.server.url}/preview/${bad}/index.html`);
      expect([403, 404], bad).toContain(response.status);
      expect(await response.text()).not.toContain('<base');
    }
    // Signed by Kiln's own key, but already expired.
    const expired = signCapability(key, { kind: 'preview', generationId: uuid, expiresAt: new Date(Date.now() - 1000) });
    const gone = await fetch(`${suite.server.url}/preview/${expired}/`);
    expect(gone.status).toBe(410);
    expect(await gone.text()).not.toContain('<base');
    // An archive's capability does not open the preview, nor the reverse.
    const zip = signCapability(key, { kind: 'zip', generationId: uuid, expiresAt: new Date(Date.now() + 60_000) });
    expect((await fetch(`${suite.server.url}/preview/${zip}/`)).status).toBe(403);
    expect((await fetch(`${suite.server.url}/archive/${token}/app.zip`)).status).toBe(403);
    // Only GET and HEAD.
    expect((await fetch(previewUrl, { method: 'POST', body: 'x' })).status).toBe(405);
    expect((await fetch(previewUrl, { method: 'HEAD' })).status).toBe(200);
  });

  it('gives a URL to every member who can see the generation, and nothing to anyone else', async () => {
    const { generation: asOwner } = await suite.owner.client.expectNoErrors(GenerationPreviewDocument, { id: generationId });
    expect(asOwner?.preview?.url).toMatch(/\/preview\//);
    const outsider = await signUp(suite.server);
    const { generation: asOutsider } = await outsider.client.expectNoErrors(GenerationPreviewDocument, { id: generationId });
    expect(asOutsider).toBeNull();
    const { generation: archived } = await outsider.client.expectNoErrors(GenerationArchiveDocument, { id: generationId, format: 'ZIP' });
    expect(archived).toBeNull();
  });

  it('with PREVIEW_ORIGIN, serves previews from that origin only, and no API there', async () => {
    const previewOrigin = 'http://preview.localhost:4999';
    // A second API instance on the same database and artefacts, configured with a preview origin.
    const api = await startInstance(suite.server.database, { DATA_DIR: suite.server.dataDir, ROLE: 'api', PREVIEW_ORIGIN: previewOrigin });
    try {
      const { generation } = await api.client(suite.owner.accessToken).expectNoErrors(GenerationPreviewDocument, { id: generationId });
      const url = generation!.preview!.url;
      expect(url.startsWith(`${previewOrigin}/preview/`)).toBe(true);
      const onPreviewHost = { host: 'preview.localhost:4999' };
      const page = await rawGet(api.url, pathOf(url), onPreviewHost);
      expect(page.status).toBe(200);
      expect(page.headers['content-security-policy']).toBe(SANDBOX);
      expect(page.body.toString('utf8')).toContain(prompt);
      for (const path of ['/graphql', '/health', '/metrics', '/']) {
        expect((await rawGet(api.url, path, onPreviewHost)).status, path).toBe(404);
      }
      // Nor over WebSocket: the upgrade is refused before any socket exists, whatever Origin it names.
      for (const origin of [previewOrigin, api.url]) {
        await expect(RawSocket.open(api.url, { ...onPreviewHost, origin }), origin).rejects.toEqual(new UpgradeRefused(404));
      }
      const onApiHost = await RawSocket.open(api.url);
      await onApiHost.init(suite.owner.accessToken);
      onApiHost.socket.close();
      await onApiHost.closed;
      // …and the API's origin serves no preview.
      expect((await rawGet(api.url, pathOf(url))).status).toBe(404);
      expect((await rawGet(api.url, '/health')).status).toBe(200);
    } finally {
      await api.stop();
    }
  });

  it('has no preview while no build produced a bundle, and metrics count what was served', async () => {
    const other = await startSuiteServer({ AUTO_FIX_MAX_ROUNDS: '0' }, 'analyze-fail');
    try {
      const user = other.owner;
      const project = await createProject(user.client, { target: 'FLUTTER' });
      const started = await startAccepted(user.client, { projectId: project.id, prompt: 'Something that will not analyze' });
      const { preview: queued } = (await user.client.expectNoErrors(GenerationPreviewDocument, { id: started.id })).generation!;
      expect(queued).toBeNull();
      const ended = await waitForEnd(other.server, user.client, user.accessToken, started.id);
      expect(ended.status).toBe('FAILED');
      const { generation } = await user.client.expectNoErrors(GenerationPreviewDocument, { id: started.id });
      expect(generation?.preview).toBeNull();
      // Its code can still be taken away: the archive holds exactly its files.
      const { generation: withArchive } = await user.client.expectNoErrors(GenerationArchiveDocument, { id: started.id, format: 'ZIP' });
      const files = unzip(Buffer.from(await (await fetch(withArchive!.archive!.url)).arrayBuffer()));
      expect([...files.keys()].sort()).toEqual(ended.files.map((file) => file.path).sort());
      for (const file of ended.files) expect(createHash('sha256').update(files.get(file.path)!).digest('hex')).toBe(file.sha256);
    } finally {
      await other.stop();
    }
    expect((await fetch(previewUrl)).status).toBe(200);
    const metrics = await (await fetch(`${suite.server.url}/metrics`)).text();
    expect(metrics).toMatch(/kiln_output_requests_total\{kind="preview",status="200"\} [1-9]/);
    expect(metrics).toMatch(/kiln_output_bytes_total\{kind="preview"\} [1-9]/);
  });
});
