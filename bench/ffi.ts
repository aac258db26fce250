/**
 * The FFI's cost per call (koffi): an empty native function and a bpf()
 * syscall the kernel rejects at once (cmd -1: EINVAL before any work), against
 * a plain JavaScript call. Needs no root for the FFI figures.
 */
import { bpfAt } from '../src/bpf/sys.js';
import { interleave, printReport, type Slice } from './lib.js';
import { loadNativeFloor } from './native.js';

const CALLS = 200_000;

export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  const floor = loadNativeFloor();
  let sink = 0;
  const js = (x: number): number => x + 1;
  const slices: Record<string, Slice> = {
    jsCall: () => { for (let i = 0; i < CALLS; i++) sink = js(sink) & 0xffff; return CALLS; },
    bpfSyscallEinval: () => { for (let i = 0; i < CALLS / 10; i++) sink += bpfAt(-1, 0, 0); return CALLS / 10; },
  };
  if (typeof floor !== 'string') slices.ffiNop = () => { for (let i = 0; i < CALLS; i++) sink = floor.nop(sink) + 1; return CALLS; };
  const results = interleave(slices, 11);
  const figures: Record<string, number> = {};
  for (const [k, v] of Object.entries(results)) figures[`${k}Ns`] = Number((1e9 / v.median).toFixed(1));
  if (!opts.json) {
    printReport('FFI cost per call', results, {}, 'calls');
    process.stdout.write(`  ns per call: ${Object.entries(figures).map(([k, v]) => `${k.replace(/Ns$/, '')} ${v}`).join(', ')}\n`);
    if (typeof floor === 'string') process.stdout.write(`  (no native nop: ${floor})\n`);
  }
  void sink;
  return figures;
}
