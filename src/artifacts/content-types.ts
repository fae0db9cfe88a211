// Content types of what web builds emit (Vite dist/, Flutter build/web/). With
// `X-Content-Type-Options: nosniff` a browser runs a script or applies a stylesheet
// only with its right type, so unknown extensions get the inert octet-stream.

const TEXT = '; charset=utf-8';
const TYPES: Readonly<Record<string, string>> = {
  html: `text/html${TEXT}`,
  htm: `text/html${TEXT}`,
  js: `text/javascript${TEXT}`,
  mjs: `text/javascript${TEXT}`,
  cjs: `text/javascript${TEXT}`,
  css: `text/css${TEXT}`,
  json: `application/json${TEXT}`,
  map: `application/json${TEXT}`,
  webmanifest: `application/manifest+json${TEXT}`,
  txt: `text/plain${TEXT}`,
  xml: `application/xml${TEXT}`,
  svg: `image/svg+xml${TEXT}`,
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  webp: 'image/webp',
  avif: 'image/avif',
  ico: 'image/x-icon',
  bmp: 'image/bmp',
  woff: 'font/woff',
  woff2: 'font/woff2',
  ttf: 'font/ttf',
  otf: 'font/otf',
  wasm: 'application/wasm',
  mp3: 'audio/mpeg',
  wav: 'audio/wav',
  ogg: 'audio/ogg',
  mp4: 'video/mp4',
  webm: 'video/webm',
  pdf: 'application/pdf',
  // Flutter: shaders, asset manifests, NOTICES (no extension)
  frag: 'application/octet-stream',
  bin: 'application/octet-stream',
};

export function contentTypeOf(path: string): string {
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (name === 'NOTICES') return `text/plain${TEXT}`;
  const dot = name.lastIndexOf('.');
  const extension = name.slice(dot + 1).toLowerCase();
  // Own keys only: `a.constructor` or `a.__proto__` would otherwise name Object.prototype's members.
  return (dot > 0 && Object.hasOwn(TYPES, extension) && TYPES[extension]) || 'application/octet-stream';
}
