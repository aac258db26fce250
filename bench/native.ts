/**
 * Native reference loops for benchmarks: bench/native/floor.c compiled at
 * bench time with the C compiler the set-up installs, loaded with koffi. They
 * show the floor (the syscall cost with no FFI per call) the TypeScript paths
 * are compared against. Returns undefined, with the reason, when no compiler works.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';

export interface NativeFloor {
  /** n lookups of keys 0..keys-1 in map fd from a C loop; returns failures. */
  lookup(fd: number, n: number, keys: number): number;
  /** An empty native function (the FFI's per-call cost). */
  nop(x: number): number;
  /** One batch update of `count` pre-encoded entries from C; returns entries written. */
  updateBatch(fd: number, keys: Buffer, values: Buffer, count: number): number;
}

const source = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'native', 'floor.c');

/** Compiles and loads the native loops, or explains why not. */
export function loadNativeFloor(): NativeFloor | string {
  const dir = mkdtempSync(join(tmpdir(), 'waggle-bench-'));
  try {
    const lib = join(dir, 'floor.so');
    let built = false;
    for (const cc of ['cc', 'clang', 'gcc']) {
      try {
        execFileSync(cc, ['-O2', '-shared', '-fPIC', source, '-o', lib], { stdio: 'ignore' });
        built = true;
        break;
      } catch {
        // try the next compiler
      }
    }
    if (!built) return 'no C compiler could build bench/native/floor.c';
    const h = koffi.load(lib);
    const lookup = h.func('long floor_lookup(int fd, int n, unsigned int keys)');
    const nop = h.func('int floor_nop(int x)');
    const updateBatch = h.func('long floor_update_batch(int fd, const void *keys, const void *values, unsigned int count)');
    return {
      lookup: (fd, n, keys) => Number(lookup(fd, n, keys)),
      nop: (x) => nop(x) as number,
      updateBatch: (fd, keys, values, count) => Number(updateBatch(fd, keys, values, count)),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true }); // the loaded library stays mapped
  }
}
