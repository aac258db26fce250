/**
 * The web UI on the agent's HTTP listener: the page, its script, and the
 * live data it reads (flows as server-sent events, the service map).
 * (Being built: see issue 7.)
 */
import type { HttpHandler } from '../agent/http-server.js';
import type { EndpointView } from './hubble.js';
import type { FlowPipeline } from './pipeline.js';

export interface UiSources {
  nodeName: string;
  flows: FlowPipeline;
  /** Local endpoints now. */
  endpoints(): EndpointView[];
}

export interface AgentUi {
  handler: HttpHandler;
  close(): void;
}

export function createUi(_sources: UiSources): AgentUi {
  return { handler: () => false, close: () => {} };
}
