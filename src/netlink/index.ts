/**
 * Waggle's rtnetlink client and namespace plumbing: links (veth), addresses,
 * routes, neighbours, named network namespaces and per-namespace sysctls, all
 * synchronous and without running `ip`. See socket.ts for the transport.
 */
export * from './netns.js';
export * from './socket.js';
export * from './link.js';
export * from './addr.js';
export * from './route.js';
export * from './neigh.js';
export * from './sysctl.js';
export {
  parseIp, parseCidr, formatIp, parseMac, formatMac, checkIfname, MAX_IFNAME_LEN,
  type IpFamily, type ParsedIp, type ParsedCidr, type Scope, type NlAttr,
} from './message.js';
