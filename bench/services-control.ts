/**
 * Part "control" of the services benchmark: the time to program 10,000
 * services × 10 backends (random selection) and the time for one backend
 * change, Waggle against kube-proxy's rule shapes.
 *
 * Waggle: the real LbMapWriter (src/datapath/lb-maps.ts) on the real maps:
 * every apply goes into fresh maps, created by loading bpf/lb_test.bpf.o's
 * maps (`lb_services`, `lb_backends`, `lb_maglev`, `lb_affinity`, the same
 * definitions the endpoint and socket programs include) pinned on a private
 * bpffs. The figure is the writer's own `stats.ms` (validation, encoding,
 * every syscall); the desired state is built before the clock starts. The
 * first apply of the process (cold JIT) is reported apart. One backend
 * change: after a full apply, one backend of one service is replaced (a new
 * backend ID and address, as when a pod is replaced), the whole desired state
 * applied again as the agent does, the writer's ms recorded; once its apply
 * returns, the datapath reads the new slot (the map update is the
 * datapath's state). Checked: the changed slot names the new backend.
 *
 * Linux (bench/services-linux.ts): per round a fresh network namespace made
 * here; the full kube-proxy-shaped ruleset of the same services loaded
 * (iptables-restore / nft -f), timed from the tool's start to its exit, the
 * result checked (rule count, map elements); then one backend change as
 * kube-proxy writes it (iptables: partial restore with --noflush rewriting
 * KUBE-SERVICES, the service's chain and the endpoint chains; nft: the
 * endpoint chain added, the service chain rewritten, the old endpoint chain
 * deleted), timed and checked. Rounds interleave Waggle and Linux (rotated
 * order).
 */
import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Collection } from '../src/bpf/object.js';
import { bpfObjectPath } from '../src/datapath/objects.js';
import { lbAddrBytes, LB_AF_INET } from '../src/datapath/codecs/lb.js';
import { LB_MAPS, LbMapWriter, lbServicesMap, type LbBackendEntry, type LbDesiredState } from '../src/datapath/lb-maps.js';
import { mountTempBpffs } from '../test/helpers/bpffs.js';
import { createNetns, type Cleanup, type Netns } from '../test/helpers/netns.js';
import { median } from './lib.js';
import { changeBackend, checkRuleset, flushRules, linuxAvailable, loadRuleset, rulesetText, type LinuxMech } from './services-linux.js';
import { PER_SERVICE_DEFAULT, SERVICE_PORT, vipOf, waggleState } from './services-rules.js';

export interface ControlConfig {
  services: number;
  per: number;
  /** Rounds; every round applies into fresh maps `waggleRepeats` times. */
  rounds: number;
  waggleRepeats: number;
  /** Rounds (the first ones) that also load the Linux rulesets. */
  linuxRounds: number;
  linux: LinuxMech[];
  /** Single backend changes measured on Waggle. */
  changes: number;
}

export interface Spread { median: number; min: number; max: number; samples: number[] }

export interface ControlResult {
  services: number;
  per: number;
  waggleColdMs: number;
  waggleApplyMs: Spread;
  /** The apply's syscalls and work as the writer counts them. */
  waggleEntries: { serviceEntries: number; backends: number };
  waggleChangeMs: Spread;
  waggleChangeP90Ms: number;
  waggleNoopMs: number;
  linux: Partial<Record<LinuxMech, { loadMs: Spread; changeMs: Spread; textMB: number; generateMs: number }>>;
  skipped: LinuxMech[];
  /** Namespaces loaded with the full ruleset, left for the wire part (their removal is registered with `keep`). */
  kept: Partial<Record<LinuxMech, Netns>>;
}

export const spread = (xs: number[]): Spread => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), samples: xs });

/** Maps for one apply: lb_test's LB maps pinned in a new directory of the private bpffs. */
function freshMaps(root: string, k: number): string {
  const pinDir = join(root, `r${k}`);
  Collection.load(bpfObjectPath('lb_test'), { programs: [], pinMaps: LB_MAPS, pinDir }).close();
  return pinDir;
}

/** Unpins a directory's maps (the maps go with the last reference). */
function dropMaps(pinDir: string): void {
  for (const f of readdirSync(pinDir)) unlinkSync(join(pinDir, f));
}

/** The state with backend j of service s replaced by a new backend (new ID and address). */
function replaced(state: LbDesiredState, s: number, j: number, newId: number, newAddr: string, per: number): LbDesiredState {
  const oldId = s * per + j + 1;
  const fe = state.frontends[s];
  if (!fe) throw new Error(`no service ${s}`);
  const old = state.backends.find((b) => b.id === oldId) as LbBackendEntry;
  const backends = state.backends.map((b) => (b.id === oldId ? { ...old, id: newId, addr: newAddr } : b));
  const frontends = state.frontends.slice();
  frontends[s] = { ...fe, backends: fe.backends.map((id) => (id === oldId ? newId : id)) };
  return { backends, frontends };
}

export async function runControl(cfg: ControlConfig, cleanup: Cleanup, keep: Cleanup | undefined, progress: (s: string) => void): Promise<ControlResult> {
  const { services: n, per } = cfg;
  const skipped = cfg.linux.filter((m) => !linuxAvailable(m));
  const linux = cfg.linux.filter((m) => !skipped.includes(m));
  const fs = mountTempBpffs();
  cleanup.add(() => fs.unmount(), 'unmount the control bpffs');
  let k = 0;

  const t0 = performance.now();
  const state = waggleState(n, per);
  progress(`  control: desired state of ${n} services × ${per} backends built in ${(performance.now() - t0).toFixed(0)} ms`);
  const texts = new Map<LinuxMech, { text: string; ms: number }>();
  for (const m of linux) {
    const g0 = performance.now();
    const text = rulesetText(m, n, per);
    texts.set(m, { text, ms: performance.now() - g0 });
  }

  // The first apply of the process: cold.
  const applyOnce = (): { ms: number; pinDir: string; writer: LbMapWriter; entries: ControlResult['waggleEntries'] } => {
    const pinDir = freshMaps(fs.path, k++);
    const writer = LbMapWriter.open(pinDir);
    const stats = writer.apply(state);
    if (stats.serviceEntriesWritten !== n * (per + 1) || stats.backendsWritten !== n * per) {
      throw new Error(`apply wrote ${stats.serviceEntriesWritten} service entries and ${stats.backendsWritten} backends, expected ${n * (per + 1)} and ${n * per}`);
    }
    return { ms: stats.ms, pinDir, writer, entries: { serviceEntries: stats.serviceEntriesWritten, backends: stats.backendsWritten } };
  };
  const cold = applyOnce();
  cold.writer.close();
  dropMaps(cold.pinDir);
  progress(`  control: first (cold) Waggle apply ${cold.ms.toFixed(0)} ms`);

  const applyMs: number[] = [];
  const lin: Record<string, { load: number[]; change: number[] }> = {};
  const kept: ControlResult['kept'] = {};
  for (let round = 0; round < cfg.rounds; round++) {
    const names: ('waggle' | LinuxMech)[] = ['waggle', ...(round < cfg.linuxRounds ? linux : [])];
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round) % names.length] as 'waggle' | LinuxMech;
      if (name === 'waggle') {
        for (let r = 0; r < cfg.waggleRepeats; r++) {
          const a = applyOnce();
          a.writer.close();
          dropMaps(a.pinDir);
          applyMs.push(a.ms);
        }
        progress(`  control: round ${round + 1}: Waggle apply ${applyMs.slice(-cfg.waggleRepeats).map((x) => x.toFixed(0)).join(', ')} ms`);
        continue;
      }
      const keepThis = keep !== undefined && round === cfg.linuxRounds - 1;
      const ns = createNetns(`wgsvc-ctl-${name === 'nft' ? 'nft' : name === 'iptables' ? 'ipt' : 'leg'}`);
      let removed = false;
      const remove = async (): Promise<void> => {
        if (removed) return;
        removed = true;
        try { await flushRules(name, ns.name); } finally { ns.remove(); }
      };
      (keepThis ? (keep as Cleanup) : cleanup).add(remove, `remove ${ns.name}`);
      const load = await loadRuleset(name, ns.name, (texts.get(name) as { text: string }).text);
      await checkRuleset(name, ns.name, n, per);
      const s = Math.floor(n / 2);
      const addr = `10.199.98.${1 + round}`;
      const change = await changeBackend(name, ns.name, n, s, 3 % per, addr, per);
      await checkRuleset(name, ns.name, n, per, { s, addr });
      (lin[name] ??= { load: [], change: [] }).load.push(load);
      (lin[name] as { change: number[] }).change.push(change);
      progress(`  control: round ${round + 1}: ${name} loaded ${n} services in ${(load / 1000).toFixed(1)} s, one backend change ${change.toFixed(0)} ms`);
      if (keepThis) {
        // Back to the full ruleset's endpoints is not needed: the wire part measures the first and the last service.
        kept[name] = ns;
      } else {
        await remove();
      }
    }
  }

  // Single backend changes on a fresh full state.
  const base = applyOnce();
  const changeMs: number[] = [];
  let current = state;
  let noopMs = NaN;
  const svcMap = lbServicesMap(base.pinDir);
  try {
    for (let c = 0; c < cfg.changes; c++) {
      const s = Math.floor(((c + 0.5) * n) / cfg.changes) % n;
      const j = c % per;
      const newId = n * per + 1 + c;
      const newAddr = `10.199.${96 + ((c >> 8) & 1)}.${(c & 255) + 1}`;
      current = replaced(current, s, j, newId, newAddr, per);
      const stats = base.writer.apply(current);
      if (stats.serviceEntriesWritten !== 1 || stats.backendsWritten !== 1 || stats.backendsDeleted !== 1) {
        throw new Error(`change ${c}: wrote ${stats.serviceEntriesWritten} service entries, ${stats.backendsWritten} backends, deleted ${stats.backendsDeleted}`);
      }
      const slot = svcMap.lookup({ addr: lbAddrBytes(4, vipOf(s)), port: SERVICE_PORT, proto: 6, family: LB_AF_INET, slot: j + 1 });
      if (slot?.backendId !== newId) throw new Error(`change ${c}: slot ${j + 1} of service ${s} names ${slot?.backendId}, expected ${newId}`);
      changeMs.push(stats.ms);
    }
    noopMs = base.writer.apply(current).ms;
  } finally {
    svcMap.close();
    base.writer.close();
    dropMaps(base.pinDir);
  }
  progress(`  control: ${cfg.changes} single backend changes, median ${median(changeMs).toFixed(1)} ms`);
  const sorted = [...changeMs].sort((a, b) => a - b);
  const out: ControlResult = {
    services: n, per, waggleColdMs: cold.ms, waggleApplyMs: spread(applyMs), waggleEntries: cold.entries,
    waggleChangeMs: spread(changeMs), waggleChangeP90Ms: sorted[Math.floor(sorted.length * 0.9)] ?? NaN, waggleNoopMs: noopMs,
    linux: {}, skipped, kept,
  };
  for (const m of linux) {
    const r = lin[m];
    if (!r) continue;
    const t = texts.get(m) as { text: string; ms: number };
    out.linux[m] = { loadMs: spread(r.load), changeMs: spread(r.change), textMB: t.text.length / 1e6, generateMs: t.ms };
  }
  return out;
}

export { PER_SERVICE_DEFAULT };
