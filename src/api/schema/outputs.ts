import { ARCHIVE_FORMATS, type ArchiveFormat, archiveFilename } from '../../artifacts/archive.js';
import { diffGeneration, type FileDiff, type GenerationDiff } from '../../artifacts/diff.js';
import { outputReads } from '../../artifacts/reads.js';
import type { SignedUrl } from '../../artifacts/outputs.js';
import { NotFoundError } from '../../errors.js';
import { restoreGeneration } from '../../generations/restore.js';
import { isTerminal } from '../../generations/status.js';
import { builder } from '../builder.js';
import { startLimits } from '../context.js';
import { GenerationRef } from './generations.js';
import { idFor, idOf } from './ids.js';

// Outputs a person sees and keeps: the live preview and archives (short-lived signed
// URLs), diffs between versions, and restoring an earlier version.

const ArchiveFormatEnum = builder.enumType('ArchiveFormat', { values: ARCHIVE_FORMATS });
const FileChangeEnum = builder.enumType('FileChange', { values: ['ADDED', 'MODIFIED', 'DELETED'] as const });

const PreviewRef = builder.objectRef<SignedUrl>('Preview').implement({
  description: 'The built app, served from a signed URL: put it in an iframe. A fresh query gives a fresh URL.',
  fields: (t) => ({
    url: t.exposeString('url', { description: 'Works without a token until expiresAt; keep it private.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
  }),
});

const ArchiveRef = builder.objectRef<SignedUrl & { filename: string }>('Archive').implement({
  description: "The generation's files (Generation.files) as a download: no dependencies, no build output.",
  fields: (t) => ({
    url: t.exposeString('url', { description: 'Works without a token until expiresAt; answered as an attachment.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
    filename: t.exposeString('filename'),
  }),
});

const FileDiffRef = builder.objectRef<FileDiff>('FileDiff').implement({
  fields: (t) => ({
    path: t.exposeString('path'),
    change: t.field({ type: FileChangeEnum, resolve: (file) => file.change }),
    additions: t.exposeInt('additions', { description: 'Lines added.' }),
    deletions: t.exposeInt('deletions', { description: 'Lines removed.' }),
    patch: t.exposeString('patch', { description: 'A unified diff that turns the old file into the new one.' }),
  }),
});

const GenerationDiffRef = builder.objectRef<GenerationDiff>('GenerationDiff').implement({
  description: 'Changed files only, by path; unchanged files are not listed.',
  fields: (t) => ({
    against: t.field({ type: GenerationRef, nullable: true, description: 'null: compared with nothing (every file ADDED).', resolve: (diff) => diff.against }),
    additions: t.exposeInt('additions'),
    deletions: t.exposeInt('deletions'),
    files: t.field({ type: [FileDiffRef], resolve: (diff) => diff.files }),
  }),
});

builder.objectFields(GenerationRef, (t) => ({
  restoredFrom: t.field({
    type: GenerationRef,
    nullable: true,
    description: 'The generation whose files this one restored (built again, with no model call).',
    resolve: (g) => g.restoredFrom,
  }),
  preview: t.loadable({
    type: PreviewRef,
    nullable: true,
    description: 'null until a build has produced a web bundle (WEB: dist/, FLUTTER: build/web/).',
    load: async (ids: string[], ctx) => {
      const withBundle = await outputReads.withBundle(ctx.db, ids);
      return ids.map((id) => (withBundle.has(id) ? ctx.useCases.outputs.previewUrl(id) : null));
    },
    resolve: (g) => g.id,
  }),
  archive: t.loadable({
    type: ArchiveRef,
    nullable: true,
    description: 'A download of Generation.files once the generation has ended (a fix round may still change them while it runs); null before, or when it has none.',
    args: { format: t.arg({ type: ArchiveFormatEnum, defaultValue: 'ZIP' }) },
    load: async (keys: string[], ctx) => {
      const rows = await outputReads.archivable(ctx.db, [...new Set(keys.map((key) => key.split('|')[0]!))]);
      return keys.map((key) => {
        const [id, format] = key.split('|') as [string, ArchiveFormat];
        const row = rows.find((r) => r.generationId === id);
        if (!row?.hasFiles || !isTerminal(row.status)) return null;
        const filename = archiveFilename(row.projectName, id, format);
        return { ...ctx.useCases.outputs.archiveUrl(id, format, filename), filename };
      });
    },
    resolve: (g, args) => `${g.id}|${args.format ?? 'ZIP'}`,
  }),
  diff: t.field({
    type: GenerationDiffRef,
    nullable: true,
    description:
      "What changed against `against` (any generation of the same project), by default against the version it started from (its parent's). Either side is the version a generation stands for: its files, or when it wrote none (queued, running, or ended before writing) those of the nearest earlier generation that did, so a generation that wrote nothing shows no changes.",
    args: { against: t.arg.globalID() },
    resolve: async (g, args, ctx) => {
      const againstId = args.against == null ? null : idOf(args.against, 'Generation');
      // A malformed id is answered like an unknown one; the errors plugin gives NotFoundError its NOT_FOUND code.
      if (args.against != null && !againstId) throw new NotFoundError('The generation to compare with was not found in this project.');
      return diffGeneration(ctx.db, g, againstId);
    },
  }),
}));

builder.mutationField('restoreGeneration', (t) =>
  t.field({
    type: GenerationRef,
    errors: {},
    description:
      'A new generation in the same session whose files are exactly those of `id`, built again with no model call; history is never rewritten. The next follow-up builds on it.',
    args: { id: t.arg.globalID({ required: true }).validate(idFor('Generation')) },
    resolve: (_root, args, ctx) => restoreGeneration(ctx.db, startLimits(ctx), args.id),
  }),
);
