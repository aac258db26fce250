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
import { closeSync, openSync } from 'node:fs';
import { errno, libcCalls } from '../bpf/sys.js';
import { BpfError, BpfSyscallError, BpfUsageError } from '../bpf/errors.js';

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
