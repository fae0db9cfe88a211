import { generationPhase, generationStatus } from '../db/schema.js';

// The one home of a generation's status and phase values (the pgEnums of the data model).

export const GENERATION_STATUSES = generationStatus.enumValues;
export const GENERATION_PHASES = generationPhase.enumValues;
export type GenerationStatus = (typeof GENERATION_STATUSES)[number];
export type GenerationPhase = (typeof GENERATION_PHASES)[number];
