import { withContinuations } from './continuation.js';
import { createOfflineProvider } from './offline.js';
import type { LlmProvider } from './provider.js';

/** The LLM part of the configuration (`config.llm`). */
export interface LlmConfig {
  provider: 'offline' | 'gemini' | 'openai';
  gemini: { apiKey?: string; model: string; baseUrl?: string };
  /** maxTokens: sent as `max_tokens` when set (OPENAI_MAX_TOKENS); unset, the server's own limit holds. */
  openai: { baseUrl?: string; apiKey?: string; model?: string; maxTokens?: number };
  offlineChunkDelayMs: number;
  /** Automatic continuations of an answer cut at the output limit (default 2). */
  maxContinuations?: number;
  /** Back-off on throttled or unavailable answers (defaults: 3 attempts, 60 s of waiting). */
  retry?: { maxAttempts: number; maxTotalWaitMs: number };
  /** How long one answer part may keep the model streaming, counting only the waits for it (default 30 min); the offline provider needs no bound. */
  answerTimeoutMs?: number;
}

const DEFAULT_MAX_CONTINUATIONS = 2;

/**
 * Builds the configured provider; rejects at start-up, not at the first generation, when a
 * setting is missing. Only the configured provider's module is loaded (Gemini's SDK is large).
 */
export async function createLlmProvider(config: LlmConfig): Promise<LlmProvider> {
  switch (config.provider) {
    case 'offline':
      return createOfflineProvider({ chunkDelayMs: config.offlineChunkDelayMs });
    case 'gemini': {
      const { apiKey, model, baseUrl } = config.gemini;
      if (!apiKey) throw new Error('LLM_PROVIDER=gemini needs GEMINI_API_KEY');
      if (!model) throw new Error('LLM_PROVIDER=gemini needs GEMINI_MODEL');
      const { createGeminiProvider } = await import('./gemini.js');
      const gemini = createGeminiProvider({ apiKey, model, ...(baseUrl ? { baseUrl } : {}), ...retryAndTimeout(config) });
      return withContinuations(gemini, config.maxContinuations ?? DEFAULT_MAX_CONTINUATIONS);
    }
    case 'openai': {
      const { baseUrl, apiKey, model, maxTokens } = config.openai;
      if (!baseUrl || !model) throw new Error('LLM_PROVIDER=openai needs OPENAI_BASE_URL and OPENAI_MODEL');
      const { createOpenAiProvider } = await import('./openai.js');
      const openai = createOpenAiProvider({
        baseUrl,
        model,
        ...(apiKey ? { apiKey } : {}),
        ...(maxTokens === undefined ? {} : { maxTokens }),
        ...retryAndTimeout(config),
      });
      return withContinuations(openai, config.maxContinuations ?? DEFAULT_MAX_CONTINUATIONS);
    }
  }
}

/** The settings the network providers share. */
function retryAndTimeout(config: LlmConfig) {
  return {
    ...(config.retry ? { retry: config.retry } : {}),
    ...(config.answerTimeoutMs === undefined ? {} : { answerTimeoutMs: config.answerTimeoutMs }),
  };
}
