import { describe, expect, it } from 'vitest';
import { withBase } from '../../src/artifacts/preview.js';

// The entry document of a preview is the generated app's, rewritten on every request so
// that its URLs resolve under the preview's path.

describe('withBase', () => {
  const root = '/preview/cap/';
  const base = `<base href="${root}">`;

  it("points Flutter's base and Vite's root-relative URLs at the preview", () => {
    expect(withBase('<html><head><base href="/"><title>t</title></head></html>', root)).toBe(`<html><head>${base}<title>t</title></head></html>`);
    expect(withBase('<!doctype html><html><head lang="en"><script src="/assets/a.js"></script></head></html>', root)).toBe(
      `<!doctype html><html><head lang="en">${base}<script src="./assets/a.js"></script></head></html>`,
    );
    expect(withBase('<!DOCTYPE html><p>no head</p>', root)).toBe(`<!DOCTYPE html>${base}<p>no head</p>`);
    expect(withBase('<p><a href="//cdn.example/x">protocol-relative stays</a></p>', root)).toBe(`${base}<p><a href="//cdn.example/x">protocol-relative stays</a></p>`);
  });

  it('keeps a base the app chose, and leaves <header> alone', () => {
    const own = '<html><head><base href="https://example.com/app/"></head><body><header>h</header></body></html>';
    expect(withBase(own, root)).toBe(own);
    expect(withBase('<header>h</header><head></head>', root)).toBe(`<header>h</header><head>${base}</head>`);
  });

  it('sets the base of a document whose <base> only names a target: deep links load the app from the preview', () => {
    for (const own of ['<base target="_top">', "<base target='_blank' >"]) {
      const page = `<!doctype html><html><head>${own}<script type="module" src="./assets/index.js"></script></head><body></body></html>`;
      const served = withBase(page, root);
      expect(served).toBe(`<!doctype html><html><head>${base}${own}<script type="module" src="./assets/index.js"></script></head><body></body></html>`);
      // What a browser on /preview/cap/settings/profile then asks for:
      const baseHref = /<base href="([^"]+)">/.exec(served)?.[1];
      expect(new URL('./assets/index.js', new URL(baseHref ?? '', 'http://kiln.test/preview/cap/settings/profile')).pathname).toBe('/preview/cap/assets/index.js');
    }
  });

  // Before, backtracking patterns took minutes on such a document, with the API's event loop held.
  it('rewrites a hostile document in one pass: a quarter of a million unclosed tags', () => {
    for (const opening of ['<head ', '<base ', '<base href="./" ']) {
      const tags = opening.repeat(250_000);
      expect(withBase(`<!doctype html>${tags}`, root)).toBe(`<!doctype html>${base}${tags}`);
    }
  });
});
