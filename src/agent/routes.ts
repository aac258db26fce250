/** The agent's API routes over the endpoint manager and the flow store. */
import { ApiError, Router, STREAMED } from './api-server.js';
import { createEndpointRequest, describeIssues } from '../endpoint/model.js';
import type { EndpointManager } from '../endpoint/manager.js';
import type { FlowStore } from '../observe/store.js';
import { VERSION } from '../version.js';

export interface AgentContext {
  nodeName: string;
  endpoints: EndpointManager;
  flows: FlowStore;
  status: () => Record<string, unknown>;
}

function positiveInt(q: URLSearchParams, name: string, fallback?: number): number | undefined {
  const v = q.get(name);
  if (v === null) return fallback;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new ApiError(400, 'BAD_QUERY', `${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
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
    .add('GET', '/v1/flows', (req) => {
      const last = positiveInt(req.query, 'last');
      const follow = req.query.get('follow') === 'true' || req.query.get('follow') === '1';
      const res = req.res;
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      for (const r of ctx.flows.last(last ?? (follow ? 0 : undefined))) res.write(`${JSON.stringify(r)}\n`);
      if (!follow) {
        res.end();
        return STREAMED;
      }
      const stop = ctx.flows.subscribe((r) => {
        if (!res.write(`${JSON.stringify(r)}\n`) && res.writableLength > 16 << 20) {
          stop();
          res.end();
        }
      });
      req.raw.on('close', stop);
      res.on('close', stop);
      return STREAMED;
    });
}
