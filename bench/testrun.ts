/**
 * BPF_PROG_TEST_RUN nanoseconds per packet for each test program, measured by
 * the kernel (the average it reports over `repeat` runs) and by the wall clock
 * around the call, interleaved. Needs root.
 */
import { Collection } from '../src/bpf/object.js';
import type { Program } from '../src/bpf/program.js';
import { bpfObjectPath } from '../src/datapath/objects.js';
import { interleave, printReport } from './lib.js';

const REPEAT = 50_000;

function ipv4Frame(proto: number): Buffer {
  const f = Buffer.alloc(64);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(50, 16);
  f[23] = proto;
  Buffer.from([10, 1, 2, 3]).copy(f, 26);
  return f;
}

export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  const colls = ['counter_xdp', 'counter_tc', 'events_test', 'maps_test'].map((n) => Collection.load(bpfObjectPath(n), n === 'events_test' ? { maxEntries: { events: 4096 } } : {}));
  try {
    const progs: Record<string, Program> = {
      xdp_count: colls[0]!.program('xdp_count'),
      tc_count: colls[1]!.program('tc_count'),
      emit_event: colls[2]!.program('emit_event'),
      lpm_lookup: colls[3]!.program('lpm_lookup'),
    };
    const frame = ipv4Frame(6);
    const kernelNs: Record<string, number[]> = {};
    const slices = Object.fromEntries(Object.entries(progs).map(([name, p]) => [name, () => {
      const r = p.testRun({ data: frame, repeat: REPEAT });
      (kernelNs[name] ??= []).push(r.durationNs);
      return REPEAT;
    }]));
    const results = interleave(slices, 11);
    const figures: Record<string, number> = {};
    for (const [name, r] of Object.entries(results)) {
      const ks = [...(kernelNs[name] ?? [])].sort((a, b) => a - b);
      figures[`${name}KernelNs`] = ks[ks.length >> 1] ?? NaN;
      figures[`${name}WallNs`] = Number((1e9 / r.median).toFixed(1));
    }
    if (!opts.json) {
      printReport(`BPF_PROG_TEST_RUN, ${REPEAT} runs per call, 64-byte frame`, results, {}, 'packets');
      for (const name of Object.keys(progs)) {
        process.stdout.write(`  ${name.padEnd(12)} ${String(figures[`${name}KernelNs`]).padStart(5)} ns/packet (kernel), ${figures[`${name}WallNs`]} ns (wall)\n`);
      }
      process.stdout.write('  (emit_event runs on a 4 KiB ring: once it is full each run is a failed reserve plus a counter)\n');
    }
    return figures;
  } finally {
    for (const c of colls) c.close();
  }
}
