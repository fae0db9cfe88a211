import { describe, expect, it } from 'vitest';
import { contentTypeOf } from '../../src/artifacts/content-types.js';

// A built file's name is generated code's choice: an extension that names a member of
// Object.prototype is an unknown extension like any other.

describe('contentTypeOf', () => {
  it('gives known extensions their type, whatever their case', () => {
    expect(contentTypeOf('assets/app.JS')).toBe('text/javascript; charset=utf-8');
    expect(contentTypeOf('a/b/logo.svg')).toBe('image/svg+xml; charset=utf-8');
    expect(contentTypeOf('assets/NOTICES')).toBe('text/plain; charset=utf-8');
  });

  it.each(['a.constructor', 'a.__proto__', 'a.toString', 'a.hasOwnProperty', 'a.valueOf', 'x/.__proto__', 'readme', 'a.unknown'])(
    '%s is served as inert bytes',
    (path) => {
      expect(contentTypeOf(path)).toBe('application/octet-stream');
    },
  );
});
