/** Where the compiled datapath objects live in the installed package. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the package root (package.json)');
    dir = parent;
  }
}

/** Absolute path of the compiled object `dist/bpf/NAME.bpf.o`. */
export function bpfObjectPath(name: string): string {
  return join(packageRoot(), 'dist', 'bpf', `${name}.bpf.o`);
}
