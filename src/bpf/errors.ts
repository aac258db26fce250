/**
 * Typed errors of the eBPF library. Every error carries a stable `code` that
 * scripts can match, the operation that failed and, for syscall failures, the
 * errno by name plus what the user can do about it.
 */
import { constants } from 'node:os';

const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** `EPERM` for 1, …; `errno N` for numbers Node does not know. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

const hints: Record<string, string> = {
  EPERM: 'run as root, or grant CAP_BPF and CAP_NET_ADMIN (CAP_PERFMON for tracing, CAP_SYS_ADMIN for cgroup hooks on older kernels)',
  EACCES: 'the kernel refused access: check the program type, attach type and pinned path permissions',
  ENOENT: 'the object does not exist: check the path, name or key',
  EEXIST: 'an entry or attachment already exists: use update without NOEXIST, or detach the old one first',
  E2BIG: 'a size or count is over the kernel limit: check max entries, key and value sizes',
  ENOSPC: 'the map is full: raise max entries or delete stale entries',
  ENOMEM: 'the kernel could not allocate memory for the map or program',
  EBUSY: 'the hook is in use: another program is attached there already',
  EINVAL: 'the kernel rejected an argument: check the map/program type, flags and sizes against the kernel version',
  EBADF: 'the file descriptor is closed or not a BPF object',
  EOPNOTSUPP: 'the kernel or the device does not support this operation (for XDP driver mode: try generic mode)',
  ENOTSUPP: 'the kernel or the device does not support this operation',
  ENODEV: 'the network device does not exist in this network namespace',
};

/** Base class of every error the library throws. */
export class BpfError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BpfError';
    this.code = code;
  }
}

/** A failed syscall or libbpf call: the operation, the errno by name and a hint. */
export class BpfSyscallError extends BpfError {
  readonly op: string;
  readonly errno: number;
  readonly errnoName: string;
  readonly hint: string;
  constructor(op: string, errno: number) {
    const name = errnoName(errno);
    const hint = hints[name] ?? '';
    super('BPF_ERR_SYSCALL', `${op}: ${name}${hint ? ` (${hint})` : ''}`);
    this.name = 'BpfSyscallError';
    this.op = op;
    this.errno = errno;
    this.errnoName = name;
    this.hint = hint;
  }
}

/** The verifier rejected a program: its name and the useful end of the log. */
export class VerifierError extends BpfError {
  readonly program: string;
  readonly errno: number;
  readonly log: string;
  readonly excerpt: string;
  constructor(program: string, errno: number, log: string) {
    const excerpt = verifierExcerpt(log);
    super(
      'BPF_ERR_VERIFIER',
      `the verifier rejected program ${program} (${errnoName(errno)}):\n${excerpt}`,
    );
    this.name = 'VerifierError';
    this.program = program;
    this.errno = errno;
    this.log = log;
    this.excerpt = excerpt;
  }
}

/** The last useful lines of a verifier log (the full log is kept on the error). */
export function verifierExcerpt(log: string, lines = 8): string {
  const useful = log
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.length > 0 && !l.startsWith('processed ') && !/^verification time/.test(l));
  return useful.slice(-lines).join('\n');
}

/** One field where a pinned map differs from the spec that wanted to reuse it. */
export interface MapFieldDifference {
  field: 'type' | 'keySize' | 'valueSize' | 'maxEntries' | 'flags';
  pinned: number | string;
  wanted: number | string;
}

/** A pinned map exists but does not match its spec; nothing was reused. */
export class IncompatibleMapError extends BpfError {
  readonly map: string;
  readonly path: string;
  readonly differences: MapFieldDifference[];
  constructor(map: string, path: string, differences: MapFieldDifference[]) {
    const list = differences.map((d) => `${d.field}: pinned ${d.pinned}, wanted ${d.wanted}`).join('; ');
    super(
      'BPF_ERR_MAP_INCOMPATIBLE',
      `pinned map ${path} does not match map ${map} (${list}); remove the pin or migrate it`,
    );
    this.name = 'IncompatibleMapError';
    this.map = map;
    this.path = path;
    this.differences = differences;
  }
}

/** A feature the running kernel lacks. */
export class UnsupportedFeatureError extends BpfError {
  readonly feature: string;
  readonly minimumKernel: string;
  constructor(feature: string, minimumKernel: string) {
    super('BPF_ERR_UNSUPPORTED', `${feature} is not supported by this kernel (needs Linux ${minimumKernel} or later)`);
    this.name = 'UnsupportedFeatureError';
    this.feature = feature;
    this.minimumKernel = minimumKernel;
  }
}

/** Bad input to the library (a codec value, a name, a size). */
export class BpfUsageError extends BpfError {
  constructor(message: string) {
    super('BPF_ERR_USAGE', message);
    this.name = 'BpfUsageError';
  }
}
