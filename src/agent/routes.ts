/** The agent's API routes over the endpoint manager and the flow store. */
import { ApiError, Router, STREAMED } from './api-server.js';
import { createEndpointRequest, describeIssues } from '../endpoint/model.js';
import type { EndpointManager } from '../endpoint/manager.js';
import { FilterError, parseFlowQuery, type FlowQuery } from '../observe/filter.js';
import type { FlowPipeline } from '../observe/pipeline.js';
import { serveFlows } from '../observe/stream.js';
import { VERSION } from '../version.js';

export interface AgentContext {
  nodeName: string;
  endpoints: EndpointManager;
  flows: FlowPipeline;
  status: () => Record<string, unknown>;
}

export function agentRoutes(ctx: AgentContext): Router {
  return new Router()
    .add('GET', '/v1/status', () => ({ version: VERSION, nodeName: ctx.nodeName, ...ctx.status() }))
    .add('GET', '/v1/endpoints', () => ctx.endpoints.list())
    .add('POST', '/v1/endpoints', async (req) => {
      const parsed = createEndpointRequest.safeParse(req.body ?? {});
      if (!parsed.success) throw new ApiError(400, 'BAD_REQUEST', describeIssues(parsed.error, 'invalid endpoint'));
      return ctx.endpoints.create(parsed.data);
    })
    .add('GET', '/v1/endpoints/:name', (req) => ctx.endpoints.get(req.params.name as string))
    .add('DELETE', '/v1/endpoints/:name', async (req) => ctx.endpoints.delete(req.params.name as string))
    .add('GET', '/v1/flows', async (req) => {
      let q: FlowQuery;
      try {
        q = parseFlowQuery(req.query);
      } catch (err) {
        if (err instanceof FilterError) throw new ApiError(400, 'BAD_FILTER', err.message);
        throw err;
      }
      await serveFlows(ctx.flows.store, q, req.res, { format: 'ndjson', onSkipped: (n) => ctx.flows.countBackpressure(n) });
      return STREAMED;
    });
}
