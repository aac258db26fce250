/**
 * Test-only helpers for cgroup v2 directories.
 */
import { readFileSync, rmdirSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

let counter = 0;

/** A cgroup created by {@link createCgroup}. */
export interface TestCgroup {
  /** Absolute path of the cgroup directory. */
  readonly path: string;
  /** Cgroup id (the directory's inode number), as BPF helpers such as bpf_get_current_cgroup_id() report it. */
  readonly id: bigint;
  /** Moves process `pid` into this cgroup. */
  addProcess(pid: number): void;
  /** Moves any remaining processes to the parent cgroup and removes the directory. Safe to call more than once. */
  remove(): void;
}

/** Decodes the octal escapes (`\040` etc.) that /proc/self/mounts uses in paths. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount point of the cgroup v2 hierarchy, read from /proc/self/mounts. Throws if none is mounted. */
export function findCgroup2Mount(): string {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields[2] === 'cgroup2' && fields[1] !== undefined) return unescapeMountField(fields[1]);
  }
  throw new Error('no cgroup2 filesystem in /proc/self/mounts');
}

function readPids(cgroupDir: string): number[] {
  return readFileSync(join(cgroupDir, 'cgroup.procs'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map(Number);
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Creates a child cgroup `${prefix}-${process.pid}-${n}` directly under the cgroup v2 mount.
 * @param prefix - directory name prefix (default `waggle-test`).
 */
export function createCgroup(prefix = 'waggle-test'): TestCgroup {
  counter += 1;
  const path = join(findCgroup2Mount(), `${prefix}-${process.pid}-${counter}`);
  mkdirSync(path);
  const parent = dirname(path);
  let removed = false;
  return {
    path,
    id: statSync(path, { bigint: true }).ino,
    addProcess: (pid) => writeFileSync(join(path, 'cgroup.procs'), `${pid}\n`),
    remove: () => {
      if (removed) return;
      // Exiting processes can linger briefly, so retry the move + rmdir a few times.
      for (let attempt = 0; ; attempt++) {
        for (const pid of readPids(path)) {
          try {
            writeFileSync(join(parent, 'cgroup.procs'), `${pid}\n`);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err; // already exited
          }
        }
        try {
          rmdirSync(path);
          removed = true;
          return;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || attempt >= 20) throw err;
          sleepSync(50);
        }
      }
    },
  };
}
