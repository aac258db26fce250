/**
 * Prometheus metrics on the agent's HTTP listener (`GET /metrics`).
 * (Being built: see issue 7.)
 */
import type { HttpHandler } from '../agent/http-server.js';
import type { ObserveStats } from './pipeline.js';

/** What the metrics read from the running agent. */
export interface MetricsSources {
  /** The agent's bpffs pin directory (shared maps live here). */
  pinDir: string;
  observe(): ObserveStats;
  endpoints(): number;
  identities(): number;
  policies(): number;
}

export interface AgentMetrics {
  handler: HttpHandler;
  close(): void;
}

export function createAgentMetrics(_sources: MetricsSources): AgentMetrics {
  return { handler: () => false, close: () => {} };
}
