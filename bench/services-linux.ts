/**
 * Linux's side of the services benchmark: loading kube-proxy-shaped rulesets
 * (bench/services-rules.ts) into a network namespace the benchmark made, one
 * backend change, checking what was loaded, and emptying it again. Every
 * command runs inside that namespace (`ip netns exec`), never in the root
 * namespace.
 *
 *   iptables         /usr/sbin/iptables (the nf_tables backend on this system, "iptables-nft"):
 *                    a full sync is `iptables-restore` into the empty namespace; a change is
 *                    kube-proxy's partial restore with `--noflush`
 *   iptables-legacy  the same with iptables-legacy-restore (x_tables)
 *   nft              kube-proxy's nftables mode: `nft -f -`, one transaction
 *
 * kube-proxy itself runs `iptables-restore --noflush` for full syncs too; on
 * an empty namespace that loads the same rules, but iptables-nft 1.8.9 then
 * takes time quadratic in the number of chains (2,000 services: 49.5 s with
 * --noflush, 3.4 s without, measured here while writing this benchmark), so
 * the full load is timed without it: the faster of the two ways to the same
 * rules.
 */
import { execFileSync } from 'node:child_process';
import { spawnIn } from './policy-tool.js';
import {
  backendPort, kubeIptables, kubeIptablesChange, kubeIptablesNatRuleCount, kubeNft, kubeNftChange, nftSvcChain, PER_SERVICE_DEFAULT,
} from './services-rules.js';

export type LinuxMech = 'iptables' | 'nft' | 'iptables-legacy';
export const LINUX_MECHS: readonly LinuxMech[] = ['iptables', 'nft', 'iptables-legacy'];

const TOOLS: Record<LinuxMech, string[]> = {
  iptables: ['iptables-restore', 'iptables-save'],
  'iptables-legacy': ['iptables-legacy-restore', 'iptables-legacy-save', 'iptables-legacy'],
  nft: ['nft'],
};

/** Whether `cmd` is on the PATH. */
function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Whether the tools of `mech` are installed. */
export function linuxAvailable(mech: LinuxMech): boolean {
  return TOOLS[mech].every(have);
}

/**
 * Runs `cmd` in namespace `ns` with `input` on stdin; resolves to its stdout
 * and the wall time from spawn to exit (ms). Rejects on a non-zero exit or
 * after `timeoutMs` (the process is killed).
 */
export function runTimed(ns: string, cmd: string[], input: string | undefined, timeoutMs: number): Promise<{ ms: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawnIn(ns, cmd, { stdin: input === undefined ? 'ignore' : 'pipe' });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code === 0) resolve({ ms, stdout: Buffer.concat(out).toString('utf8') });
      else reject(new Error(`${cmd.join(' ')} in ${ns} exited ${code ?? signal}${signal === 'SIGKILL' ? ` (timeout ${timeoutMs} ms?)` : ''}: ${stderr.trim().slice(0, 2000)}`));
    });
    if (input !== undefined) {
      child.stdin?.on('error', () => undefined); // a failing child closes its stdin early; the exit status tells
      child.stdin?.end(input);
    }
  });
}

/** The full-sync input of `mech` for services 0..n−1. */
export function rulesetText(mech: LinuxMech, n: number, per = PER_SERVICE_DEFAULT): string {
  return mech === 'nft' ? kubeNft(n, per) : kubeIptables(n, per);
}

const LOAD_CMD: Record<LinuxMech, string[]> = {
  iptables: ['iptables-restore'],
  'iptables-legacy': ['iptables-legacy-restore'],
  nft: ['nft', '-f', '-'],
};

const CHANGE_CMD: Record<LinuxMech, string[]> = {
  iptables: ['iptables-restore', '--noflush'],
  'iptables-legacy': ['iptables-legacy-restore', '--noflush'],
  nft: ['nft', '-f', '-'],
};

/** Loads a full-sync text into `ns` (which should hold no rules); resolves to the ms it took. */
export async function loadRuleset(mech: LinuxMech, ns: string, text: string, timeoutMs = 1_800_000): Promise<number> {
  return (await runTimed(ns, LOAD_CMD[mech], text, timeoutMs)).ms;
}

/** Replaces endpoint j of service s by `newAddr` as kube-proxy would; resolves to the ms it took. */
export async function changeBackend(mech: LinuxMech, ns: string, n: number, s: number, j: number, newAddr: string, per = PER_SERVICE_DEFAULT): Promise<number> {
  const text = mech === 'nft' ? kubeNftChange(s, j, newAddr, per) : kubeIptablesChange(n, s, j, newAddr, per);
  return (await runTimed(ns, CHANGE_CMD[mech], text, 1_800_000)).ms;
}

/**
 * Checks that `ns` holds the rules of n services (throws otherwise); with
 * `changed`, also that service s now sends to the new endpoint address.
 */
export async function checkRuleset(mech: LinuxMech, ns: string, n: number, per = PER_SERVICE_DEFAULT, changed?: { s: number; addr: string }): Promise<void> {
  if (mech === 'nft') {
    const map = (await runTimed(ns, ['nft', 'list', 'map', 'ip', 'kube-proxy', 'service-ips'], undefined, 600_000)).stdout;
    const elements = (map.match(/: goto service-/g) ?? []).length;
    if (elements !== n) throw new Error(`nft in ${ns}: service-ips holds ${elements} services, expected ${n}`);
    if (changed !== undefined) {
      const chain = (await runTimed(ns, ['nft', 'list', 'chain', 'ip', 'kube-proxy', nftSvcChain(changed.s)], undefined, 600_000)).stdout;
      if (!chain.includes(`__${changed.addr}/`)) throw new Error(`nft in ${ns}: service ${changed.s}'s chain does not go to ${changed.addr} after the change`);
    }
    return;
  }
  const save = (await runTimed(ns, [mech === 'iptables' ? 'iptables-save' : 'iptables-legacy-save', '-t', 'nat'], undefined, 600_000)).stdout;
  let rules = 0;
  for (let i = save.indexOf('\n-A '); i >= 0; i = save.indexOf('\n-A ', i + 1)) rules++;
  const want = kubeIptablesNatRuleCount(n, per);
  if (rules !== want) throw new Error(`${mech} in ${ns}: the nat table holds ${rules} rules, expected ${want}`);
  if (changed !== undefined && !save.includes(`--to-destination ${changed.addr}:${backendPort(changed.s)}`)) throw new Error(`${mech} in ${ns}: no DNAT to ${changed.addr} after the change`);
}

/**
 * Empties the namespace's rules (before it is deleted: a namespace deleted
 * with 100,000 chains in it is torn down by a kernel worker for seconds
 * afterwards, in the middle of whatever is measured next).
 */
export async function flushRules(mech: LinuxMech, ns: string): Promise<void> {
  if (mech === 'iptables-legacy') {
    for (const t of ['nat', 'filter']) {
      await runTimed(ns, ['iptables-legacy', '-t', t, '-F'], undefined, 600_000);
      await runTimed(ns, ['iptables-legacy', '-t', t, '-X'], undefined, 600_000);
    }
    return;
  }
  await runTimed(ns, ['nft', 'flush', 'ruleset'], undefined, 600_000);
}
