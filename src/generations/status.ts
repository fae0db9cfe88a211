import { buildStepStatus, fixRoundStatus, generationPhase, generationStatus } from '../db/schema.js';

// The one home of a generation's status and phase values (the pgEnums of the data model).

export const GENERATION_STATUSES = generationStatus.enumValues;
export const GENERATION_PHASES = generationPhase.enumValues;
export const BUILD_STEP_STATUSES = buildStepStatus.enumValues;
export const FIX_ROUND_STATUSES = fixRoundStatus.enumValues;
export type GenerationStatus = (typeof GENERATION_STATUSES)[number];
export type GenerationPhase = (typeof GENERATION_PHASES)[number];

/** A generation in one of these has ended and never changes status again. */
export const TERMINAL_STATUSES: GenerationStatus[] = ['SUCCEEDED', 'FAILED', 'CANCELLED'];
/** A generation in one of these still holds its place: counted against limits and budgets. */
export const ACTIVE_STATUSES: GenerationStatus[] = GENERATION_STATUSES.filter((status) => !TERMINAL_STATUSES.includes(status));

export const isTerminal = (status: GenerationStatus): boolean => TERMINAL_STATUSES.includes(status);
