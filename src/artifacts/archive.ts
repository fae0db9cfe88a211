import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import yazl from 'yazl';

// Archives of Generation.files, streamed: one file's bytes are fetched when the
// archive reaches it, so memory holds one file at a time, never the whole archive.

export const ARCHIVE_FORMATS = ['ZIP', 'TAR_GZ'] as const;
export type ArchiveFormat = (typeof ARCHIVE_FORMATS)[number];

export interface ArchiveEntry {
  path: string;
  size: number;
  content(): Promise<Buffer>;
}

export const archiveExtension: Record<ArchiveFormat, 'zip' | 'tar.gz'> = { ZIP: 'zip', TAR_GZ: 'tar.gz' };
export const archiveContentType: Record<ArchiveFormat, string> = { ZIP: 'application/zip', TAR_GZ: 'application/gzip' };

/** `<project name as a slug>-<first 8 of the generation id>.<zip|tar.gz>` */
export function archiveFilename(projectName: string, generationId: string, format: ArchiveFormat): string {
  const slug = projectName
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 60)
    .replace(/-+$/, '');
  return `${slug || 'kiln-app'}-${generationId.slice(0, 8)}.${archiveExtension[format]}`;
}

/** Writes the archive to `out` (the response), honouring its backpressure. */
export async function writeArchive(format: ArchiveFormat, entries: ArchiveEntry[], mtime: Date, out: NodeJS.WritableStream): Promise<void> {
  if (format === 'ZIP') {
    const zip = new yazl.ZipFile();
    // A file that cannot be read, or whose bytes changed size meanwhile (a fix round), fails the
    // ZipFile itself, not its stream: unheard, that error ended the process.
    const output = zip.outputStream as Readable;
    zip.on('error', (error: Error) => output.destroy(error));
    for (const entry of entries) {
      zip.addReadStreamLazy(entry.path, { mtime, mode: 0o100644, size: entry.size }, (callback) => {
        entry.content().then(
          (content) => callback(null, Readable.from([content])),
          (error: Error) => callback(error, undefined as unknown as Readable),
        );
      });
    }
    zip.end();
    await pipeline(output, out);
    return;
  }
  const pack = tar.pack();
  const gzip = createGzip();
  const written = pipeline(pack, gzip, out);
  const fill = (async () => {
    for (const entry of entries) {
      const content = await entry.content();
      await new Promise<void>((resolve, reject) =>
        pack.entry({ name: entry.path, size: content.length, mtime, mode: 0o644 }, content, (error) => (error ? reject(error) : resolve())),
      );
    }
    pack.finalize();
  })();
  fill.catch((error: unknown) => pack.destroy(error as Error));
  await Promise.all([written, fill]);
}

