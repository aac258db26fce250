/**
 * The kernel side of an endpoint, through rtnetlink: its network namespace,
 * the veth pair (host side in the node's namespace, `eth0` inside), addresses,
 * routes through the virtual router, and the node's routes and neighbour
 * entries back to it. Every step has an undo so a failed create leaves nothing.
 */
import { createHash } from 'node:crypto';
import { existsSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { addAddress, addNeighbor, addRoute, createVeth, deleteLink, getLink, replaceRoute, setLinkUp, setSysctl, type NetlinkTarget } from '../netlink/index.js';
import { closeNetns, createNamedNetns, deleteNamedNetns, NETNS_RUN_DIR, openNetns } from '../netlink/netns.js';

/** The name of the endpoint's interface inside its namespace. */
export const ENDPOINT_IFNAME = 'eth0';
/** `NSFS_MAGIC`: what statfs says for a network namespace file. */
const NSFS_MAGIC = 0x6e736673;

/** `wgl` + 8 hex digits of the node and endpoint names: unique per node, ≤ 15 characters. */
export function hostIfnameFor(nodeName: string, endpointName: string): string {
  return `wgl${createHash('sha256').update(`${nodeName}/${endpointName}`).digest('hex').slice(0, 8)}`;
}

/** Where a named namespace lives. */
export function netnsPathFor(name: string): string {
  return join(NETNS_RUN_DIR, name);
}

/** Is `path` a network namespace file (a bind mount of nsfs or /proc/PID/ns/net)? */
export function isNetnsFile(path: string): boolean {
  try {
    return statfsSync(path).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}

/** A stack of undo steps run newest first; errors in one step do not stop the others. */
export class Undo {
  private readonly steps: (() => void)[] = [];
  push(step: () => void): void { this.steps.push(step); }
  run(onError: (err: Error) => void): void {
    for (const step of this.steps.reverse()) {
      try { step(); } catch (err) { onError(err as Error); }
    }
    this.steps.length = 0;
  }
  clear(): void { this.steps.length = 0; }
}

export interface NetnsHandle { path: string; created: boolean }

/** Creates the named namespace `name` (refusing to take over an existing one). */
export function createEndpointNetns(name: string, undo: Undo): NetnsHandle {
  const path = netnsPathFor(name);
  if (existsSync(path)) {
    throw Object.assign(new Error(`a network namespace named ${name} already exists: adopt it with --netns ${path} or choose another name`), { code: 'NETNS_EXISTS' });
  }
  createNamedNetns(name);
  undo.push(() => { deleteNamedNetns(name); });
  return { path, created: true };
}

export interface VethResult { hostIfindex: number; hostMac: string; mac: string }

/**
 * Creates the veth pair: `hostIfname` in the calling thread's (node's)
 * namespace, `eth0` in the endpoint's namespace, both up.
 */
export function createEndpointVeth(hostIfname: string, netnsPath: string, undo: Undo): VethResult {
  if (getLink(hostIfname)) {
    throw Object.assign(new Error(`interface ${hostIfname} already exists on the node (left over from an earlier endpoint?): run waggle agent --cleanup or delete it`), { code: 'LINK_EXISTS' });
  }
  const nsFd = openNetns(netnsPath);
  try {
    const inside: NetlinkTarget = { netnsFd: nsFd };
    if (getLink(ENDPOINT_IFNAME, inside)) {
      throw Object.assign(new Error(`the namespace ${netnsPath} already has an interface ${ENDPOINT_IFNAME}`), { code: 'LINK_EXISTS' });
    }
    const pair = createVeth({ name: hostIfname, peerName: ENDPOINT_IFNAME, peerNetnsFd: nsFd });
    undo.push(() => { deleteLink(hostIfname); });
    // No IPv6 link-local address on the host side: it has no address at all.
    setSysctl(`net/ipv6/conf/${hostIfname}/addr_gen_mode`, '1');
    setLinkUp(pair.ifindex, true);
    // The router is static: the endpoint needs no router solicitations or advertisements.
    setSysctl(`net/ipv6/conf/${ENDPOINT_IFNAME}/router_solicitations`, '0', { netnsFd: nsFd });
    setSysctl(`net/ipv6/conf/${ENDPOINT_IFNAME}/accept_ra`, '0', { netnsFd: nsFd });
    setLinkUp(ENDPOINT_IFNAME, true, inside);
    const host = getLink(pair.ifindex);
    const ep = getLink(ENDPOINT_IFNAME, inside);
    if (!host?.mac || !ep?.mac) throw new Error(`veth ${hostIfname} vanished while it was being set up`);
    return { hostIfindex: pair.ifindex, hostMac: host.mac, mac: ep.mac };
  } finally {
    closeNetns(nsFd);
  }
}

export interface AddressPlan {
  ipv4?: string;
  ipv6?: string;
  routerIpv4?: string;
  routerIpv6?: string;
}

/**
 * Inside the endpoint: its addresses (/32, /128), an on-link route to the
 * virtual router and the default route through it. `replace` makes it
 * idempotent (used when repairing).
 */
export function configureEndpointNetns(netnsPath: string, plan: AddressPlan, replace = false): void {
  const nsFd = openNetns(netnsPath);
  try {
    const inside: NetlinkTarget = { netnsFd: nsFd };
    const eth0 = getLink(ENDPOINT_IFNAME, inside);
    if (!eth0) throw new Error(`the endpoint namespace ${netnsPath} has no ${ENDPOINT_IFNAME}`);
    const route = replace ? replaceRoute : addRoute;
    for (const [ip, router, bits, family] of [[plan.ipv4, plan.routerIpv4, 32, 4], [plan.ipv6, plan.routerIpv6, 128, 6]] as const) {
      if (!ip || !router) continue;
      addAddress(eth0.ifindex, `${ip}/${bits}`, { nodad: family === 6, replace }, inside);
      route({ dst: `${router}/${bits}`, ifindex: eth0.ifindex, scope: 'link', family }, inside);
      route({ dst: 'default', gateway: router, ifindex: eth0.ifindex, family }, inside);
    }
  } finally {
    closeNetns(nsFd);
  }
}

/**
 * In the node's namespace: a route to each endpoint address through its host
 * veth and a permanent neighbour entry, so the node reaches the endpoint
 * without ARP (the host side has no address of its own).
 */
export function configureNodeSide(hostIfindex: number, mac: string, addresses: readonly string[]): void {
  for (const ip of addresses) {
    const family = ip.includes(':') ? 6 : 4;
    replaceRoute({ dst: `${ip}/${family === 4 ? 32 : 128}`, ifindex: hostIfindex, scope: 'link', family });
    addNeighbor(hostIfindex, ip, mac, { permanent: true, replace: true });
  }
}

export { deleteLink, getLink, deleteNamedNetns };
