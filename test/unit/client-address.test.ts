import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { addressBlock, clientAddress } from '../../src/api/rate-limit.js';

// The address a per-client limit counts, read from X-Forwarded-For behind TRUST_PROXY.
// Some proxies (Azure Application Gateway, Front Door) write the client's port as well.

const PROXY = '10.0.0.5';

/** A request that reached us from the proxy, which wrote `forwarded`. */
const from = (forwarded: string) => ({ socket: { remoteAddress: PROXY }, headers: { 'x-forwarded-for': forwarded } }) as unknown as IncomingMessage;

describe('the client address behind a trusted proxy', () => {
  it('drops the port a proxy adds, so each client keeps its own address', () => {
    expect(clientAddress(from('203.0.113.7:51234'), 1)).toBe('203.0.113.7');
    expect(clientAddress(from('203.0.113.8:443'), 1)).toBe('203.0.113.8');
    expect(clientAddress(from('[2001:db8::1]:443'), 1)).toBe('2001:db8::1');
    expect(clientAddress(from('[2001:DB8::2]'), 1)).toBe('2001:db8::2');
    expect(clientAddress(from('[::ffff:203.0.113.9]:80'), 1)).toBe('203.0.113.9');
    // The entry the trusted proxy wrote, whatever the client put before it.
    expect(clientAddress(from('192.0.2.1:1, 203.0.113.7:51234'), 1)).toBe('203.0.113.7');
    expect(addressBlock(clientAddress(from('[2001:db8:7:1::1]:443'), 1))).toBe('2001:db8:7:1::/64');
  });

  it('still refuses what is not an address (the proxy is counted instead), with or without a port', () => {
    for (const garbage of [
      'garbage',
      'host.example:80',
      '203.0.113.7:',
      '203.0.113.7:99999',
      '203.0.113.7:80:80',
      '203.0.113.256:80',
      '[203.0.113.7]:80',
      '[2001:db8::1',
      '[2001:db8::1]:',
      '[2001:db8::1]:https',
      '[garbage]:443',
    ]) {
      expect(clientAddress(from(garbage), 1), garbage).toBe(PROXY);
    }
  });

  it('ignores the header, ports and all, without TRUST_PROXY', () => {
    expect(clientAddress(from('203.0.113.7:51234'), 0)).toBe(PROXY);
  });
});
