/**
 * Running code inside another network namespace.
 *
 * Interface indexes, netlink sockets (libbpf's TC calls) and device lookups by
 * `BPF_LINK_CREATE` are all resolved in the network namespace of the *calling
 * thread*. {@link inNetns} moves the JavaScript thread into a namespace with
 * setns(2), runs a function, and always moves it back.
 *
 * Synchronous only: the thread is back in its own namespace as soon as `fn`
 * returns, so anything `fn` leaves for later (a Promise, a callback, a socket
 * connect completed by libuv) runs in the original namespace. An `fn` that
 * returns a Promise is rejected with a usage error. libuv's thread pool never
 * enters the namespace either: use only synchronous calls inside `fn`.
 */
import { closeSync, constants as fsConstants, lstatSync, mkdirSync, openSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { errno, libcCalls, netCalls } from '../bpf/sys.js';
import { BpfError, BpfSyscallError, BpfUsageError } from '../bpf/errors.js';
// An import cycle (link.js → socket.js → this module), safe: only used inside functions.
import { setLinkUp } from './link.js';

/** `CLONE_NEWNET`: the namespace type argument of setns(2). */
export const CLONE_NEWNET = 0x40000000;

/** The calling thread's own network namespace. */
const THREAD_NETNS = '/proc/thread-self/ns/net';

/**
 * Opens a network namespace file (default: the calling thread's current
 * namespace) and returns its descriptor; the caller closes it with
 * {@link closeNetns}. Holding the descriptor keeps the namespace alive.
 */
export function openNetns(nsPath: string = THREAD_NETNS): number {
  try {
    // Synchronous fs calls run on the calling thread, so thread-self is this thread.
    return openSync(nsPath, 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BpfSyscallError(`open network namespace ${nsPath}`, Math.abs(e.errno ?? 0));
  }
}

/** Closes a descriptor from {@link openNetns}. */
export function closeNetns(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

function setns(fd: number, what: string): void {
  if ((libcCalls.setns(fd, CLONE_NEWNET) as number) < 0) {
    throw new BpfSyscallError(`enter network namespace ${what}`, errno());
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (typeof v === 'object' || typeof v === 'function') && v !== null
    && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * Runs `fn` synchronously with the calling thread inside the network namespace
 * open at `nsFd`, then moves the thread back to where it was (also when `fn`
 * throws). See the module comment: synchronous code only.
 */
export function inNetnsFd<T>(nsFd: number, fn: () => T, what = `fd ${nsFd}`): T {
  const home = openNetns();
  try {
    setns(nsFd, what);
    let result: T | undefined;
    let failure: { error: unknown } | undefined;
    try {
      result = fn();
    } catch (error) {
      failure = { error };
    }
    try {
      setns(home, 'of this thread (going back)');
    } catch (err) {
      // The thread is stranded in the other namespace: nothing later can be trusted.
      throw new BpfError('BPF_ERR_NETNS', `cannot return to the original network namespace after running in ${what}: ${(err as Error).message}`, { cause: err });
    }
    if (failure) throw failure.error;
    if (isThenable(result)) {
      // Do not leave an unhandled rejection behind.
      Promise.resolve(result).catch(() => undefined);
      throw new BpfUsageError(`inNetns(${what}): the function returned a Promise; only synchronous code runs inside the namespace`);
    }
    return result as T;
  } finally {
    closeNetns(home);
  }
}

/**
 * Runs `fn` synchronously with the calling thread inside the network namespace
 * at `nsPath` (e.g. `/var/run/netns/NAME` or `/proc/PID/ns/net`), then moves the
 * thread back, also when `fn` throws. Synchronous code only.
 */
export function inNetns<T>(nsPath: string, fn: () => T): T {
  const fd = openNetns(nsPath);
  try {
    return inNetnsFd(fd, fn, nsPath);
  } finally {
    closeNetns(fd);
  }
}

// ---- named (persistent) network namespaces, as `ip netns add/del` --------

/** Where iproute2 keeps named network namespaces. */
export const NETNS_RUN_DIR = '/var/run/netns';

const MS_BIND = 0x1000;
const MS_REC = 0x4000;
const MS_SHARED = 1 << 20;
const MNT_DETACH = 2;
const EINVAL = 22;

function checkNetnsName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0') || Buffer.byteLength(name) > 255) {
    throw new BpfUsageError(`invalid network namespace name ${JSON.stringify(name)}`);
  }
}

function fsErrno(err: unknown): number {
  return Math.abs((err as NodeJS.ErrnoException).errno ?? 0);
}

/**
 * Makes `dir` a shared mount point (bind-mounting it onto itself first if it is
 * not a mount point), as iproute2 does, so namespace mounts made later
 * propagate to every mount namespace (e.g. `ip netns exec` children).
 */
function ensureSharedMountPoint(dir: string): void {
  let madeMountPoint = false;
  for (;;) {
    if ((libcCalls.mount('', dir, 'none', MS_SHARED | MS_REC, null) as number) === 0) return;
    const e = errno();
    if (e !== EINVAL || madeMountPoint) throw new BpfSyscallError(`make ${dir} a shared mount point`, e);
    if ((libcCalls.mount(dir, dir, 'none', MS_BIND | MS_REC, null) as number) < 0) {
      throw new BpfSyscallError(`bind-mount ${dir} onto itself`, errno());
    }
    madeMountPoint = true;
  }
}

/**
 * Creates a persistent network namespace named `name`, like `ip netns add`,
 * without running anything: the calling thread unshares a new namespace,
 * bind-mounts it on `${dir}/${name}` and returns to its own namespace. `lo` is
 * brought up inside. Returns the path (usable with {@link inNetns}, `ip -n`,
 * `ip netns exec`). Throws `EEXIST` if the name is taken.
 */
export function createNamedNetns(name: string, dir: string = NETNS_RUN_DIR): string {
  checkNetnsName(name);
  const path = join(dir, name);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new BpfSyscallError(`create directory ${dir}`, fsErrno(err));
  }
  ensureSharedMountPoint(dir);
  try {
    closeSync(openSync(path, fsConstants.O_RDONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0));
  } catch (err) {
    throw new BpfSyscallError(`create network namespace ${name}: ${path}`, fsErrno(err));
  }
  try {
    const home = openNetns();
    try {
      if ((netCalls.unshare(CLONE_NEWNET) as number) < 0) {
        throw new BpfSyscallError(`create network namespace ${name} (unshare)`, errno());
      }
      // From here on the thread is inside the new namespace: always go back.
      const mounted = (libcCalls.mount(THREAD_NETNS, path, 'none', MS_BIND, null) as number) === 0;
      const mountErrno = mounted ? 0 : errno();
      try {
        setns(home, 'of this thread (going back)');
      } catch (err) {
        throw new BpfError('BPF_ERR_NETNS', `cannot return to the original network namespace after creating ${name}: ${(err as Error).message}`, { cause: err });
      }
      if (!mounted) throw new BpfSyscallError(`bind-mount network namespace ${name} on ${path}`, mountErrno);
    } finally {
      closeNetns(home);
    }
    setLinkUp('lo', true, { netnsPath: path });
  } catch (err) {
    try {
      deleteNamedNetns(name, dir);
    } catch {
      // keep the first error
    }
    throw err;
  }
  return path;
}

/**
 * Deletes the named network namespace `${dir}/${name}`, like `ip netns del`:
 * detaches the bind mount and removes the file. The namespace itself goes once
 * nothing else (a process, an open descriptor, a socket) holds it. Returns false
 * when there was no such name.
 */
export function deleteNamedNetns(name: string, dir: string = NETNS_RUN_DIR): boolean {
  checkNetnsName(name);
  const path = join(dir, name);
  try {
    lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new BpfSyscallError(`delete network namespace ${name}`, fsErrno(err));
  }
  if ((libcCalls.umount2(path, MNT_DETACH) as number) < 0) {
    const e = errno();
    if (e !== EINVAL) throw new BpfSyscallError(`unmount network namespace ${path}`, e); // EINVAL: not mounted
  }
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new BpfSyscallError(`delete network namespace file ${path}`, fsErrno(err));
  }
  return true;
}
