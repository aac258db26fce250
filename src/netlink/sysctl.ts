/**
 * Kernel parameters under /proc/sys, per network namespace.
 *
 * Files below /proc/sys/net show the namespace of the thread that opens them,
 * so with `netnsPath` / `netnsFd` the file is opened and written from inside
 * that namespace ({@link inNetns}; synchronous fs calls run on this thread).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { BpfSyscallError, BpfUsageError } from '../bpf/errors.js';
import { inNetns, inNetnsFd } from './netns.js';

/** Where a sysctl is read or written: default the calling thread's namespace. */
export interface SysctlOptions {
  netnsPath?: string;
  netnsFd?: number;
}

/**
 * The /proc/sys file of a key given as a slash-separated path such as
 * `net/ipv4/conf/wgl0/forwarding` (slashes, not dots: interface names may hold dots).
 */
export function sysctlFile(key: string): string {
  const parts = key.split('/');
  if (key.startsWith('/') || parts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\0'))) {
    throw new BpfUsageError(`bad sysctl key ${JSON.stringify(key)}: use a relative path like net/ipv4/conf/eth0/forwarding`);
  }
  return `/proc/sys/${key}`;
}

function run<T>(opts: SysctlOptions, fn: () => T): T {
  if (opts.netnsFd !== undefined) return inNetnsFd(opts.netnsFd, fn);
  if (opts.netnsPath !== undefined) return inNetns(opts.netnsPath, fn);
  return fn();
}

function fsError(op: string, err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  return typeof e.errno === 'number' ? new BpfSyscallError(op, Math.abs(e.errno)) : (err as Error);
}

/** Writes `value` to the sysctl `key` (see {@link sysctlFile}). */
export function setSysctl(key: string, value: string | number, opts: SysctlOptions = {}): void {
  const file = sysctlFile(key);
  run(opts, () => {
    try {
      writeFileSync(file, `${value}\n`);
    } catch (err) {
      throw fsError(`set sysctl ${key} to ${value}`, err);
    }
  });
}

/** Reads the sysctl `key`, without the trailing newline. */
export function getSysctl(key: string, opts: SysctlOptions = {}): string {
  const file = sysctlFile(key);
  return run(opts, () => {
    try {
      return readFileSync(file, 'utf8').replace(/\n$/, '');
    } catch (err) {
      throw fsError(`read sysctl ${key}`, err);
    }
  });
}
