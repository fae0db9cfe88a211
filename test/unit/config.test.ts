import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.js';

describe('parseConfig', () => {
  it('reads an empty DATA_DIR as unset: the default folder, not the working directory', () => {
    expect(parseConfig({ DATA_DIR: '' }).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({ DATA_DIR: '  ' }).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({}).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({ DATA_DIR: '/srv/kiln' }).dataDir).toBe('/srv/kiln');
  });
});
