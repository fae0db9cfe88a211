/**
 * Where a run's streams stand: chunk and build-log seqs and build-step ordinals go on
 * across rounds, so each stays contiguous from 0 for the whole generation.
 */
export interface RunCursor {
  nextChunkSeq: number;
  nextLogSeq: number;
  nextStepOrdinal: number;
  /** Characters of build log kept so far, every step and round together. */
  logChars: number;
  /** Characters of the model's output kept so far, every answer and round together (MAX_GENERATION_OUTPUT_CHARS). */
  outputChars: number;
}

export const newRunCursor = (): RunCursor => ({ nextChunkSeq: 0, nextLogSeq: 0, nextStepOrdinal: 0, logChars: 0, outputChars: 0 });
