import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config.js';

describe('parseConfig', () => {
  it('reads an empty DATA_DIR as unset: the default folder, not the working directory', () => {
    expect(parseConfig({ DATA_DIR: '' }).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({ DATA_DIR: '  ' }).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({}).dataDir).toBe(path.resolve('.kiln'));
    expect(parseConfig({ DATA_DIR: '/srv/kiln' }).dataDir).toBe('/srv/kiln');
  });

  it('reads every blank variable as unset: PORT= listens on 4000, not on a random port, and HOST= on loopback', () => {
    const blank = parseConfig({ PORT: '', HOST: ' ', LOG_LEVEL: '', TRUST_PROXY: '', ARTIFACT_STORE: '' });
    expect(blank.http).toMatchObject({ port: 4000, host: '127.0.0.1' });
    expect(blank.logLevel).toBe('info');
  });

  it('refuses a blank NODE_ENV rather than run without the production checks', () => {
    expect(() => parseConfig({ NODE_ENV: '' })).toThrow(ConfigError);
  });
});
