/**
 * Maglev for services: table computation per service (src/service/maglev.ts)
 * at the default size (M = 16381) and larger, and the cost of 1,000 Maglev
 * services in the kernel: programming them through the LB map writer
 * (src/datapath/lb-maps.ts) on a private bpffs, one backend change, and the
 * memory per service's table (inner array: M entries of 8 bytes, the kernel
 * aligns array values to 8) from /proc/self/fdinfo `memlock` and from
 * /proc/meminfo's VmallocUsed. Needs root for the map part.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap } from '../src/bpf/map.js';
import { Collection } from '../src/bpf/object.js';
import { u32 } from '../src/bpf/codec.js';
import { MapType } from '../src/bpf/types.js';
import { bpfObjectPath } from '../src/datapath/objects.js';
import { LB_MAGLEV_INNER_FLAGS } from '../src/datapath/codecs/lb.js';
import { LB_MAPS, LbMapWriter, readLbState, type LbBackendEntry, type LbFrontend } from '../src/datapath/lb-maps.js';
import { maglevBackendTable, maglevIdentity, type MaglevBackend } from '../src/service/maglev.js';
import { mountTempBpffs } from '../test/helpers/bpffs.js';
import { interleave, printReport } from './lib.js';

const SERVICES = 1000;
const PER_SERVICE = 10;
const M = 16381;

function backendsOf(service: number, n: number): MaglevBackend[] {
  return Array.from({ length: n }, (_, i) => ({ id: service * n + i + 1, identity: maglevIdentity(`10.${service >> 8}.${service & 255}.${i + 1}`, 8080, 'TCP') }));
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

export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  const figures: Record<string, number> = {};
  // Tables per second (items = tables), interleaved so the sizes are compared on the same machine state.
  const b10 = backendsOf(1, 10), b100 = backendsOf(2, 100);
  const compute = interleave({
    'M=16381 N=10': () => { for (let i = 0; i < 20; i++) maglevBackendTable(b10, 16381); return 20; },
    'M=16381 N=100': () => { for (let i = 0; i < 20; i++) maglevBackendTable(b100, 16381); return 20; },
    'M=65537 N=10': () => { for (let i = 0; i < 5; i++) maglevBackendTable(b10, 65537); return 5; },
    'M=131071 N=10': () => { for (let i = 0; i < 3; i++) maglevBackendTable(b10, 131071); return 3; },
  }, { rounds: 9, warmup: 2 });
  for (const [name, r] of Object.entries(compute)) figures[`tableMs ${name}`] = 1000 / r.median;
  if (!opts.json) {
    printReport('Maglev table computation', compute, {}, 'tables');
    process.stdout.write(`  per table: ${Object.entries(compute).map(([n, r]) => `${n}: ${(1000 / r.median).toFixed(2)} ms`).join('; ')}\n`);
  }

  if (process.getuid?.() !== 0) {
    if (!opts.json) process.stdout.write('  (not root: skipping the map part)\n');
    return figures;
  }
  const fs = mountTempBpffs();
  const pinDir = join(fs.path, 'maps');
  let writer: LbMapWriter | undefined;
  try {
    Collection.load(bpfObjectPath('lb_test'), { programs: [], pinMaps: LB_MAPS, pinDir }).close();
    writer = LbMapWriter.open(pinDir, { maglevTableSize: M });
    const backends: LbBackendEntry[] = [];
    const frontends: LbFrontend[] = [];
    for (let s = 0; s < SERVICES; s++) {
      const ids: number[] = [];
      for (let b = 0; b < PER_SERVICE; b++) {
        const id = s * PER_SERVICE + b + 1;
        backends.push({ id, family: 4, addr: `10.${(id >> 16) & 255}.${(id >> 8) & 255}.${id & 255}`, port: 8080, proto: 'TCP', terminating: false });
        ids.push(id);
      }
      frontends.push({
        serviceId: s + 1, family: 4, addr: `172.18.${s >> 8}.${s & 255}`, port: 443, proto: 'TCP',
        flags: { maglev: true, affinity: false, nodePort: false, local: false }, affinityTimeout: 0, backends: ids,
      });
    }
    const vmBefore = vmallocUsedKiB();
    const first = writer.apply({ frontends, backends });
    const vmAfter = vmallocUsedKiB();
    const changed = { backends: backends.filter((b) => b.id !== 55), frontends: frontends.map((f) => (f.serviceId === 6 ? { ...f, backends: f.backends.filter((id) => id !== 55) } : f)) };
    const change = writer.apply(changed);
    writer.close();
    let t0 = performance.now();
    writer = LbMapWriter.open(pinDir, { maglevTableSize: M });
    const restart = writer.apply(changed);
    const restartMs = performance.now() - t0;

    // One table's charge as the kernel counts it, and the sum over the live tables (opened by ID).
    const one = BpfMap.create({ name: 'lbmg_probe', type: MapType.Array, keySize: 4, valueSize: 4, maxEntries: M, flags: LB_MAGLEV_INNER_FLAGS }, u32, u32);
    const perTableMemlock = memlock(one.fd);
    one.close();
    t0 = performance.now();
    const listed = readLbState(pinDir);
    const listMs = performance.now() - t0;

    figures.servicesFirstApplyMs = first.ms;
    figures.servicesComputeMs = first.maglevComputeMs;
    figures.oneBackendChangeMs = change.ms;
    figures.restartMs = restartMs;
    figures.tableMemlockBytes = perTableMemlock;
    figures.vmallocPerTableBytes = ((vmAfter - vmBefore) * 1024) / SERVICES;
    figures.listMs = listMs;
    if (!opts.json) {
      process.stdout.write(`\n${SERVICES} Maglev services × ${PER_SERVICE} backends, M = ${M}, through the LB map writer:\n`
        + `  first apply       ${first.ms.toFixed(0)} ms (computing the tables ${first.maglevComputeMs.toFixed(0)} ms; ${first.maglevTablesCreated} tables created)\n`
        + `  one backend change ${change.ms.toFixed(1)} ms (${change.maglevEntriesWritten} entries rewritten in place)\n`
        + `  restart (open + apply, recomputes and compares every table) ${restartMs.toFixed(0)} ms, ${restart.maglevEntriesWritten} entries written\n`
        + `  listing (readLbState, ${listed.maglev.length} tables) ${listMs.toFixed(0)} ms\n`
        + `  memory per table: memlock ${perTableMemlock} bytes (${(perTableMemlock / M).toFixed(2)} bytes per entry); `
        + `VmallocUsed grew ${((vmAfter - vmBefore) / 1024).toFixed(1)} MiB for ${SERVICES} tables (${(figures.vmallocPerTableBytes / 1024).toFixed(1)} KiB per table)\n`);
    }
    return figures;
  } finally {
    writer?.close();
    fs.unmount();
  }
}
