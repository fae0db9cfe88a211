import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../config.js';

// AES-256-GCM for project secrets: `v1.<iv>.<tag>.<ciphertext>` in base64url. GCM's
// tag makes a wrong key fail loudly instead of yielding garbage.

export interface SecretBox {
  seal(plaintext: string, context: string): string;
  open(sealed: string, context: string): string;
}

/** The whole 16-byte GCM tag, never a truncated one (which would make forgeries far cheaper). */
const TAG_BYTES = 16;
const KEY_BYTES = 32;

export function createSecretBox(key: Buffer): SecretBox {
  return {
    seal(plaintext, context) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(context));
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return ['v1', iv, cipher.getAuthTag(), body].map((part) => (typeof part === 'string' ? part : part.toString('base64url'))).join('.');
    },
    open(sealed, context) {
      const [version, iv, tag, body] = sealed.split('.');
      if (version !== 'v1' || !iv || !tag || body === undefined) throw new Error('Unknown secret format');
      const tagBytes = Buffer.from(tag, 'base64url');
      // Refused as a wrong tag is: the secret does not open.
      if (tagBytes.length !== TAG_BYTES) throw new Error('Unsupported state or unable to authenticate data');
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'), { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(context));
      decipher.setAuthTag(tagBytes);
      return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
    },
  };
}

/**
 * The configured key, or for the embedded default one generated once and kept in
 * DATA_DIR (so secrets survive restarts). Undefined disables project secrets.
 */
export async function loadEncryptionKey(options: { configured?: Buffer; dataDir: string; embedded: boolean }): Promise<Buffer | undefined> {
  if (options.configured) return options.configured;
  if (!options.embedded) return undefined;
  const file = path.join(options.dataDir, 'encryption.key');
  try {
    return await keyFromFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await mkdir(options.dataDir, { recursive: true });
  // Written whole to a file of its own, then linked into place: the key file is complete or
  // absent, never empty after a crash, and link() never replaces one another process made first.
  const key = randomBytes(KEY_BYTES);
  const temporary = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const handle = await open(temporary, 'wx', 0o600);
    try {
      await handle.writeFile(key.toString('base64'));
      await handle.sync();
    } finally {
      await handle.close();
    }
    const placed = await link(temporary, file).then(
      () => true,
      async (error: NodeJS.ErrnoException) => {
        if (error.code === 'EEXIST') return false;
        if (!NO_HARD_LINKS.has(error.code ?? '')) throw error;
        // A filesystem without hard links (some network or FUSE mounts): created exclusively, as before.
        return writeFile(file, key.toString('base64'), { flag: 'wx', mode: 0o600 }).then(
          () => true,
          (raced: NodeJS.ErrnoException) => (raced.code === 'EEXIST' ? false : Promise.reject(raced)),
        );
      },
    );
    // Another process generated the key first: use theirs.
    if (!placed) return await keyFromFile(file);
  } finally {
    await unlink(temporary).catch(() => undefined);
  }
  await syncFolder(options.dataDir);
  return key;
}

const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** The key kept in `file`; a file that does not hold 32 bytes stops start-up. */
async function keyFromFile(file: string): Promise<Buffer> {
  const text = (await readFile(file, 'utf8')).trim();
  const key = Buffer.from(text, 'base64');
  if (key.length !== KEY_BYTES || key.toString('base64') !== text) {
    throw new ConfigError([
      `${file} does not hold a ${KEY_BYTES}-byte key in base64: restore it from a backup ` +
        '(or, if no project secrets were ever stored with it, remove it and a new one is generated)',
    ]);
  }
  return key;
}

/** Makes the new directory entry durable, where the platform allows a folder to be synced. */
async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r').catch(() => undefined);
  await handle?.sync().catch(() => undefined);
  await handle?.close();
}
