/**
 * Test-only helper for a private BPF filesystem mount.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A bpffs mounted by {@link mountTempBpffs}. */
export interface TempBpffs {
  /** Mount point; pin objects below it. */
  readonly path: string;
  /** Unmounts (lazily if busy) and removes the directory. Safe to call more than once. */
  unmount(): void;
}

function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
}

/** Mounts a fresh bpffs on a new temporary directory under `os.tmpdir()`. Needs root. */
export function mountTempBpffs(): TempBpffs {
  const path = mkdtempSync(join(tmpdir(), 'waggle-bpffs-'));
  try {
    run('mount', ['-t', 'bpf', 'bpf', path]);
  } catch (err) {
    rmdirSync(path);
    throw err;
  }
  let mounted = true;
  return {
    path,
    unmount: () => {
      if (!mounted) return;
      try {
        run('umount', [path]);
      } catch {
        run('umount', ['-l', path]);
      }
      mounted = false;
      rmdirSync(path);
    },
  };
}
