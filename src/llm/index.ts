import { createGeminiProvider } from './gemini.js';
import { createOfflineProvider } from './offline.js';
import { createOpenAiProvider } from './openai.js';
import type { LlmProvider } from './provider.js';

/** The LLM part of the configuration (`config.llm`). */
export interface LlmConfig {
  provider: 'offline' | 'gemini' | 'openai';
  gemini: { apiKey?: string; model: string; baseUrl?: string };
  openai: { baseUrl?: string; apiKey?: string; model?: string };
  offlineChunkDelayMs: number;
}

/** Builds the configured provider; throws at start-up, not at the first generation, when a setting is missing. */
export function createLlmProvider(config: LlmConfig): LlmProvider {
  switch (config.provider) {
    case 'offline':
      return createOfflineProvider({ chunkDelayMs: config.offlineChunkDelayMs });
    case 'gemini': {
      const { apiKey, model, baseUrl } = config.gemini;
      if (!apiKey) throw new Error('LLM_PROVIDER=gemini needs GEMINI_API_KEY');
      if (!model) throw new Error('LLM_PROVIDER=gemini needs GEMINI_MODEL');
      return createGeminiProvider({ apiKey, model, ...(baseUrl ? { baseUrl } : {}) });
    }
    case 'openai': {
      const { baseUrl, apiKey, model } = config.openai;
      if (!baseUrl || !model) throw new Error('LLM_PROVIDER=openai needs OPENAI_BASE_URL and OPENAI_MODEL');
      return createOpenAiProvider({ baseUrl, model, ...(apiKey ? { apiKey } : {}) });
    }
  }
}
