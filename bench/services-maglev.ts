/**
 * Part "maglev" of the services benchmark: Maglev table computation and the
 * kernel memory of Maglev services (formerly a bench of its own).
 *
 * 1. Computation per table (src/service/maglev.ts maglevBackendTable, the
 *    paper's population): M = 16381 (the default) with 10 backends, the goal
 *    figure; also 100 backends and M = 65537 / 131071 for scale. Interleaved
 *    rounds, tables/s → ms per table.
 * 2. 1,000 Maglev services × 10 backends through the real LbMapWriter on
 *    fresh maps (bpf/lb_test.bpf.o's LB maps pinned on a private bpffs), per
 *    round: the whole apply (`stats.ms`) and the part of it spent computing
 *    tables (`stats.maglevComputeMs`); then one backend removed from one
 *    service (its table updated in place through the shared mapping).
 * 3. Memory per Maglev service: every table the writer made (the inner maps
 *    of `lb_maglev`, opened by ID) with its `memlock` from
 *    /proc/self/fdinfo (what the kernel charges: M entries × 8 bytes, array
 *    values are 8-byte aligned, + a page, mmapable); the service's
 *    `lb_services` entries and backends come on top (same as a random
 *    service); cross-checked by VmallocUsed's growth over the apply.
 */
import { readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { check, closeFd } from '../src/bpf/fd.js';
import { mapInfo } from '../src/bpf/map.js';
import { Collection } from '../src/bpf/object.js';
import { bpf } from '../src/bpf/sys.js';
import { Cmd } from '../src/bpf/types.js';
import { bpfObjectPath } from '../src/datapath/objects.js';
import { LB_MAPS, LbMapWriter, lbMaglevMap, type LbDesiredState, type LbFrontend } from '../src/datapath/lb-maps.js';
import { maglevBackendTable, maglevIdentity, type MaglevBackend } from '../src/service/maglev.js';
import { mountTempBpffs } from '../test/helpers/bpffs.js';
import type { Cleanup } from '../test/helpers/netns.js';
import { interleave, median, type RateSummary } from './lib.js';
import { spread, type Spread } from './services-control.js';
import { waggleState } from './services-rules.js';

export interface MaglevConfig {
  services: number;
  per: number;
  tableSize: number;
  rounds: number;
  computeRounds: number;
}

export interface MaglevResult {
  /** ms per table by case (`M=16381 N=10` …), median over rounds. */
  tableMs: Record<string, number>;
  compute: Record<string, RateSummary>;
  /** The writer: whole first apply of all Maglev services, and its table computation part. */
  applyMs: Spread;
  computeMs: Spread;
  changeMs: Spread;
  changeEntries: number;
  tables: number;
  memlockPerTable: number;
  vmallocPerServiceBytes: number;
}

function backendsOf(service: number, n: number): MaglevBackend[] {
  return Array.from({ length: n }, (_, i) => ({ id: service * n + i + 1, identity: maglevIdentity(`10.199.${service >> 8}.${service & 255}`, 20000 + i, 'TCP') }));
}

/** `memlock:` of the map behind `fd` in /proc/self/fdinfo (bytes the kernel charges for it). */
function memlock(fd: number): number {
  const m = /^memlock:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function vmallocUsedKiB(): number {
  const m = /^VmallocUsed:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function mapFdById(id: number): number {
  const attr = Buffer.alloc(12);
  attr.writeUInt32LE(id, 0);
  return check(bpf(Cmd.MapGetFdById, attr), () => `open map id ${id}`);
}

/** Memlock of every inner table in `lb_maglev` (and their sizes). */
function tableMemlocks(pinDir: string): { memlock: number[]; sizes: number[] } {
  const outer = lbMaglevMap(pinDir);
  try {
    const memlocks: number[] = [];
    const sizes: number[] = [];
    for (const [, mapId] of outer.lookupBatch()) {
      const fd = mapFdById(mapId);
      try {
        memlocks.push(memlock(fd));
        sizes.push(mapInfo(fd).maxEntries);
      } finally {
        closeFd(fd);
      }
    }
    return { memlock: memlocks, sizes };
  } finally {
    outer.close();
  }
}

export function runMaglev(cfg: MaglevConfig, cleanup: Cleanup, progress: (s: string) => void): MaglevResult {
  const M = cfg.tableSize;
  const b10 = backendsOf(1, cfg.per);
  const b100 = backendsOf(2, 100);
  const cases = {
    [`M=${M} N=${cfg.per}`]: () => { for (let i = 0; i < 20; i++) maglevBackendTable(b10, M); return 20; },
    [`M=${M} N=100`]: () => { for (let i = 0; i < 10; i++) maglevBackendTable(b100, M); return 10; },
    [`M=65537 N=${cfg.per}`]: () => { for (let i = 0; i < 5; i++) maglevBackendTable(b10, 65537); return 5; },
    [`M=131071 N=${cfg.per}`]: () => { for (let i = 0; i < 3; i++) maglevBackendTable(b10, 131071); return 3; },
  };
  const compute = interleave(cases, { rounds: cfg.computeRounds, warmup: 2 });
  const tableMs: Record<string, number> = {};
  for (const [name, r] of Object.entries(compute)) tableMs[name] = 1000 / r.median;
  progress(`  maglev: one table (M=${M}, ${cfg.per} backends) ${(tableMs[`M=${M} N=${cfg.per}`] as number).toFixed(2)} ms`);

  const fs = mountTempBpffs();
  cleanup.add(() => fs.unmount(), 'unmount the Maglev bpffs');
  const base = waggleState(cfg.services, cfg.per);
  const state: LbDesiredState = {
    backends: base.backends,
    frontends: base.frontends.map((f): LbFrontend => ({ ...f, flags: { ...f.flags, maglev: true } })),
  };
  const applyMs: number[] = [];
  const computeMs: number[] = [];
  const changeMs: number[] = [];
  let changeEntries = 0;
  let tables = 0;
  let memlockPerTable = NaN;
  const vmalloc: number[] = [];
  for (let round = 0; round < cfg.rounds; round++) {
    const pinDir = join(fs.path, `m${round}`);
    Collection.load(bpfObjectPath('lb_test'), { programs: [], pinMaps: LB_MAPS, pinDir }).close();
    const writer = LbMapWriter.open(pinDir, { maglevTableSize: M });
    try {
      const vm0 = vmallocUsedKiB();
      const first = writer.apply(state);
      const vm1 = vmallocUsedKiB();
      if (first.maglevTablesCreated !== cfg.services) throw new Error(`apply created ${first.maglevTablesCreated} Maglev tables, expected ${cfg.services}`);
      applyMs.push(first.ms);
      computeMs.push(first.maglevComputeMs);
      vmalloc.push(((vm1 - vm0) * 1024) / cfg.services);
      // One backend leaves one service: its table is recomputed and changed in place.
      const s = (round * 37) % cfg.services;
      const gone = s * cfg.per + 1 + (round % cfg.per);
      const changed: LbDesiredState = {
        backends: state.backends.filter((b) => b.id !== gone),
        frontends: state.frontends.map((f, i) => (i === s ? { ...f, backends: f.backends.filter((id) => id !== gone) } : f)),
      };
      const change = writer.apply(changed);
      if (change.maglevTablesUpdated !== 1) throw new Error(`the change updated ${change.maglevTablesUpdated} tables in place, expected 1`);
      changeMs.push(change.ms);
      changeEntries = change.maglevEntriesWritten;
      const mem = tableMemlocks(pinDir);
      tables = mem.memlock.length;
      if (tables !== cfg.services || mem.sizes.some((x) => x !== M)) throw new Error(`lb_maglev holds ${tables} tables (sizes ${[...new Set(mem.sizes)].join(', ')}), expected ${cfg.services} of ${M}`);
      memlockPerTable = median(mem.memlock);
      progress(`  maglev: round ${round + 1}: ${cfg.services} Maglev services applied in ${first.ms.toFixed(0)} ms (tables ${first.maglevComputeMs.toFixed(0)} ms), one backend change ${change.ms.toFixed(1)} ms`);
    } finally {
      writer.close();
      // Unpinning the outer map frees it and every table in it.
      for (const m of LB_MAPS) {
        try { unlinkSync(join(pinDir, m)); } catch { /* not pinned */ }
      }
    }
  }
  return {
    tableMs, compute, applyMs: spread(applyMs), computeMs: spread(computeMs), changeMs: spread(changeMs), changeEntries, tables,
    memlockPerTable, vmallocPerServiceBytes: median(vmalloc),
  };
}
