/**
 * A throw-away two-namespace topology for the self-check: namespaces A and B
 * joined by a veth pair, with private addresses that exist only inside them.
 * Built with iproute2; the agent's own plumbing (rtnetlink) replaces this.
 */
import { execFileSync } from 'node:child_process';

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

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
}

/** Creates the topology; on failure removes whatever part was made. */
export function createTopology(): Topology {
  const id = `${process.pid % 100000}`;
  const nsA = `waggle-sc-${id}-a`;
  const nsB = `waggle-sc-${id}-b`;
  const topo: Topology = {
    nsA, nsB, devB: 'wsc-b',
    addrA4: '10.199.250.1', addrB4: '10.199.250.2',
    addrA6: 'fd99:250::1', addrB6: 'fd99:250::2',
    remove() {
      for (const ns of [nsA, nsB]) {
        try { ip('netns', 'del', ns); } catch { /* already gone */ }
      }
    },
  };
  try {
    ip('netns', 'add', nsA);
    ip('netns', 'add', nsB);
    ip('-n', nsA, 'link', 'add', 'wsc-a', 'type', 'veth', 'peer', 'name', topo.devB, 'netns', nsB);
    for (const [ns, dev, v4, v6] of [[nsA, 'wsc-a', topo.addrA4, topo.addrA6], [nsB, topo.devB, topo.addrB4, topo.addrB6]] as const) {
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', `${v4}/24`, 'dev', dev);
      ip('-n', ns, 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad');
      ip('-n', ns, 'link', 'set', dev, 'up');
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
    const stdout = execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    return { code: 0, stdout };
  } catch (err) {
    const e = err as { status?: number; stdout?: string };
    return { code: e.status ?? 1, stdout: e.stdout ?? '' };
  }
}

/** Interface index of `dev` inside `ns`. */
export function ifindexIn(ns: string, dev: string): number {
  const out = JSON.parse(ip('-n', ns, '-j', 'link', 'show', 'dev', dev)) as { ifindex: number }[];
  const first = out[0];
  if (!first) throw new Error(`no device ${dev} in namespace ${ns}`);
  return first.ifindex;
}
