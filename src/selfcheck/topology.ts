/**
 * A throw-away two-namespace topology for the self-check: namespaces A and B
 * joined by a veth pair, with private addresses that exist only inside them.
 * Built with the same rtnetlink library the agent uses.
 */
import { execFileSync } from 'node:child_process';
import { addAddress, createVeth, getLink, setLinkUp } from '../netlink/index.js';
import { closeNetns, createNamedNetns, deleteNamedNetns, openNetns } from '../netlink/netns.js';
import { netnsPathFor } from '../endpoint/plumbing.js';

export interface Topology {
  nsA: string;
  nsB: string;
  /** Interface in B that the programs attach to. */
  devB: string;
  addrA4: string;
  addrB4: string;
  addrA6: string;
  addrB6: string;
  remove(): void;
}

/** Creates the topology with Waggle's rtnetlink library; on failure removes whatever part was made. */
export function createTopology(): Topology {
  const id = `${process.pid % 100000}`;
  const nsA = `waggle-sc-${id}-a`;
  const nsB = `waggle-sc-${id}-b`;
  const made: string[] = [];
  const topo: Topology = {
    nsA, nsB, devB: 'wsc-b',
    addrA4: '10.199.250.1', addrB4: '10.199.250.2',
    addrA6: 'fd99:250::1', addrB6: 'fd99:250::2',
    remove() {
      // Deleting a namespace deletes the veth end inside it, and so the pair.
      for (const ns of made.splice(0).reverse()) deleteNamedNetns(ns);
    },
  };
  try {
    for (const ns of [nsA, nsB]) {
      createNamedNetns(ns);
      made.push(ns);
    }
    const fdB = openNetns(netnsPathFor(nsB));
    try {
      createVeth({ name: 'wsc-a', peerName: topo.devB, peerNetnsFd: fdB }, { netnsPath: netnsPathFor(nsA) });
    } finally {
      closeNetns(fdB);
    }
    for (const [ns, dev, v4, v6] of [[nsA, 'wsc-a', topo.addrA4, topo.addrA6], [nsB, topo.devB, topo.addrB4, topo.addrB6]] as const) {
      const inside = { netnsPath: netnsPathFor(ns) };
      const link = getLink(dev, inside);
      if (!link) throw new Error(`veth end ${dev} missing in namespace ${ns}`);
      addAddress(link.ifindex, `${v4}/24`, {}, inside);
      addAddress(link.ifindex, `${v6}/64`, { nodad: true }, inside);
      setLinkUp(link.ifindex, true, inside);
    }
    return topo;
  } catch (err) {
    topo.remove();
    throw err;
  }
}

/** Runs `cmd` inside namespace `ns`; returns stdout (non-zero exits are returned, not thrown). */
export function execIn(ns: string, cmd: string[], timeoutMs = 15_000): { code: number; stdout: string } {
  try {
    const stdout = execFileSync('nsenter', [`--net=${netnsPathFor(ns)}`, '--', ...cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    return { code: 0, stdout };
  } catch (err) {
    const e = err as { status?: number; stdout?: string };
    return { code: e.status ?? 1, stdout: e.stdout ?? '' };
  }
}

/** Interface index of `dev` inside `ns`. */
export function ifindexIn(ns: string, dev: string): number {
  const link = getLink(dev, { netnsPath: netnsPathFor(ns) });
  if (!link) throw new Error(`no device ${dev} in namespace ${ns}`);
  return link.ifindex;
}
