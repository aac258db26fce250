/** The endpoint record the agent persists and the API returns, and request validation. */
import { z } from 'zod';
import { labelKeyProblem, labelValueProblem } from './labels.js';

const dnsLabel = z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a DNS label: 1-63 lower-case letters, digits and -, starting and ending with a letter or digit');

const labels = z.record(z.string()).superRefine((l, ctx) => {
  for (const [k, v] of Object.entries(l)) {
    const problem = labelKeyProblem(k) ?? labelValueProblem(k, v);
    if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem, path: [k] });
  }
});

/** Body of `POST /v1/endpoints`. */
export const createEndpointRequest = z.object({
  name: dnsLabel,
  namespace: dnsLabel.default('default'),
  labels: labels.default({}),
  /** Adopt this existing network namespace (a path such as /var/run/netns/x) instead of creating one. */
  netns: z.string().startsWith('/', 'must be an absolute path').optional(),
}).strict();

export type CreateEndpointRequest = z.infer<typeof createEndpointRequest>;

/** A local endpoint as persisted in the state directory. */
export const endpointRecord = z.object({
  id: z.number().int().min(1).max(65535),
  name: dnsLabel,
  namespace: dnsLabel,
  labels: z.record(z.string()),
  netnsPath: z.string().startsWith('/'),
  /** Whether the agent created the namespace (and so deletes it with the endpoint). */
  netnsCreated: z.boolean(),
  hostIfname: z.string().min(1).max(15),
  hostIfindex: z.number().int().min(1),
  hostMac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/),
  mac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/),
  ipv4: z.string().optional(),
  ipv6: z.string().optional(),
  /** Security identity (from the identity allocator; absent in state written before identities existed). */
  identity: z.number().int().min(1).optional(),
  createdAt: z.string(),
});

export type EndpointRecord = z.infer<typeof endpointRecord>;

/** The agent's persisted state (state.json). */
export const agentState = z.object({
  version: z.literal(1),
  endpoints: z.array(endpointRecord),
});

export type AgentState = z.infer<typeof agentState>;

/** Formats zod issues as one sentence naming the fields. */
export function describeIssues(err: z.ZodError, what: string): string {
  return `${what}: ${err.issues.map((i) => `${i.path.length ? `${i.path.join('.')}: ` : ''}${i.message}`).join('; ')}`;
}
