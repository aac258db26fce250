/**
 * A synchronous rtnetlink client: an `AF_NETLINK` / `NETLINK_ROUTE` raw socket
 * driven through libc (src/bpf/sys.ts).
 *
 * Route-netlink requests are handled by the kernel inside the `sendto` call,
 * so the answer is already queued when `recv` runs: a request costs a few
 * microseconds and never waits on the network. The calls therefore block the
 * calling thread (bounded by a receive timeout) and need no event loop, which
 * is what lets them run inside {@link inNetnsFd}.
 *
 * A netlink socket belongs to the network namespace it was created in, for its
 * whole life: open one with `netnsFd`/`netnsPath` to act on another namespace.
 */
import { errnoName, BpfError } from '../bpf/errors.js';
import { errno as lastErrno, libcCalls, netCalls } from '../bpf/sys.js';
import {
  NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
  decodeErrorBody, encodeMessage, parseMessages, type NetlinkMessage,
} from './message.js';
import { inNetns, inNetnsFd } from './netns.js';

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;
const MSG_PEEK = 0x2;
const MSG_TRUNC = 0x20;
const SOCKADDR_NL_LEN = 12;
const EINTR = 4;
const EAGAIN = 11;
const DUMP_ATTEMPTS = 5;

const hints: Record<string, string> = {
  EPERM: 'run as root, or grant CAP_NET_ADMIN',
  EACCES: 'run as root, or grant CAP_NET_ADMIN',
  EEXIST: 'it exists already: delete it first, or use the replace variant where there is one',
  ENODEV: 'no such network device in this network namespace',
  ENOENT: 'no such object in this network namespace',
  ESRCH: 'no such route',
  EADDRNOTAVAIL: 'the address is not assigned there, or not valid for this use',
  ENETUNREACH: 'the gateway is not on a connected network: add an address covering it, or use onlink',
  EHOSTUNREACH: 'the gateway is not on a connected network: add an address covering it, or use onlink',
  EBUSY: 'the device or object is in use',
  EINVAL: 'the kernel rejected an argument',
  EOPNOTSUPP: 'the kernel or the device does not support this operation',
  EAGAIN: 'the kernel did not answer in time',
};

/**
 * A request the kernel refused (an `NLMSG_ERROR` with a non-zero error), with
 * the operation in words, the errno by name, the kernel's own explanation when
 * it gave one (extended ack) and a hint. Code `NETLINK_ERR`.
 *
 * @example `create veth wgl0 (peer wgl1): EEXIST (it already exists: …)`
 */
export class NetlinkError extends BpfError {
  /** What was attempted, e.g. `add address 10.0.0.1/24 to wgl0`. */
  readonly op: string;
  readonly errno: number;
  /** `EEXIST`, `ENODEV`, … */
  readonly errnoName: string;
  /** The kernel's extended-ack message, e.g. `Invalid prefix for given prefix length`. */
  readonly kernelMessage: string | undefined;
  readonly hint: string;
  constructor(op: string, errno: number, kernelMessage?: string) {
    const name = errnoName(errno);
    const hint = hints[name] ?? '';
    const detail = [kernelMessage, hint].filter((s) => s !== undefined && s !== '').join('; ');
    super('NETLINK_ERR', `${op}: ${name}${detail ? ` (${detail})` : ''}`);
    this.name = 'NetlinkError';
    this.op = op;
    this.errno = errno;
    this.errnoName = name;
    this.kernelMessage = kernelMessage;
    this.hint = hint;
  }
}

/** Options of {@link NetlinkSocket}. */
export interface NetlinkSocketOptions {
  /** Create the socket inside the network namespace open at this descriptor. */
  netnsFd?: number;
  /** Create the socket inside the network namespace at this path (e.g. `/var/run/netns/NAME`). */
  netnsPath?: string;
  /** Longest wait for the kernel's answer, in milliseconds (default 5000). */
  timeoutMs?: number;
}

/** Text of an operation, or a function computing it (called only when it fails). */
export type OpText = string | (() => string);

function opText(op: OpText): string {
  if (typeof op === 'string') return op;
  try {
    return op();
  } catch {
    return 'netlink request';
  }
}

/** A `NETLINK_ROUTE` socket. Close it with {@link NetlinkSocket.close}. */
export class NetlinkSocket {
  private sock: number;
  /** The port id the kernel assigned at bind time. */
  readonly portId: number;
  private seq: number;
  private rx: Buffer = Buffer.alloc(32 * 1024);
  private readonly addr: Buffer;

  /** Opens and binds a socket, inside `opts.netnsFd` / `opts.netnsPath` when given. */
  constructor(opts: NetlinkSocketOptions = {}) {
    const create = (): number => openSocket();
    if (opts.netnsFd !== undefined && opts.netnsPath !== undefined) {
      throw new BpfError('NETLINK_ERR', 'NetlinkSocket: give netnsFd or netnsPath, not both');
    }
    const fd = opts.netnsFd !== undefined ? inNetnsFd(opts.netnsFd, create)
      : opts.netnsPath !== undefined ? inNetns(opts.netnsPath, create)
        : create();
    this.sock = fd;
    try {
      setReceiveTimeout(fd, opts.timeoutMs ?? 5000);
      // Best effort: short error replies with the kernel's explanation.
      const one = Buffer.alloc(4);
      one.writeInt32LE(1);
      netCalls.setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, one, 4);
      netCalls.setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
      this.addr = Buffer.alloc(SOCKADDR_NL_LEN);
      this.addr.writeUInt16LE(AF_NETLINK, 0);
      if ((netCalls.bind(fd, this.addr, SOCKADDR_NL_LEN) as number) < 0) throw new NetlinkError('bind netlink socket', lastErrno());
      const local = Buffer.alloc(SOCKADDR_NL_LEN);
      const len = Buffer.alloc(4);
      len.writeUInt32LE(SOCKADDR_NL_LEN);
      if ((netCalls.getsockname(fd, local, len) as number) < 0) throw new NetlinkError('read netlink socket address', lastErrno());
      this.portId = local.readUInt32LE(4);
    } catch (err) {
      libcCalls.close(fd);
      this.sock = -1;
      throw err;
    }
    this.seq = (Date.now() & 0x3fffffff) >>> 0;
  }

  /** The socket's file descriptor (-1 once closed). */
  get fd(): number {
    return this.sock;
  }

  /** True until {@link close}. */
  get open(): boolean {
    return this.sock >= 0;
  }

  /**
   * Sends one request and returns the bodies of the kernel's replies (empty for
   * a plain acknowledgement). `NLM_F_REQUEST` is added, and `NLM_F_ACK` unless
   * `flags` has `NLM_F_DUMP`. A dump collects every part up to `NLMSG_DONE` and
   * is retried when the kernel flags it inconsistent (`NLM_F_DUMP_INTR`).
   * Throws {@link NetlinkError} when the kernel answers with an error.
   */
  request(type: number, flags: number, body: Buffer, op: OpText = `netlink request ${type}`): Buffer[] {
    return this.requestMessages(type, flags, body, op).map((m) => m.body);
  }

  /** {@link request}, returning whole messages (type, flags, body). */
  requestMessages(type: number, flags: number, body: Buffer, op: OpText = `netlink request ${type}`): NetlinkMessage[] {
    const dump = (flags & NLM_F_DUMP) === NLM_F_DUMP;
    for (let attempt = 1; ; attempt++) {
      const { messages, interrupted } = this.exchange(type, flags, body, op, dump);
      if (!interrupted || attempt >= DUMP_ATTEMPTS) return messages;
    }
  }

  /** Sends a dump request (`NLM_F_DUMP`) and returns every reply body. */
  dump(type: number, body: Buffer, op: OpText = `netlink dump ${type}`): Buffer[] {
    return this.request(type, NLM_F_DUMP, body, op);
  }

  /** Closes the socket. Safe to call more than once. */
  close(): void {
    if (this.sock < 0) return;
    libcCalls.close(this.sock);
    this.sock = -1;
  }

  private exchange(type: number, flags: number, body: Buffer, op: OpText, dump: boolean): { messages: NetlinkMessage[]; interrupted: boolean } {
    if (this.fd < 0) throw new BpfError('NETLINK_ERR', `${opText(op)}: the netlink socket is closed`);
    this.seq = (this.seq + 1) >>> 0;
    const seq = this.seq;
    const msg = encodeMessage({ type, flags: flags | NLM_F_REQUEST | (dump ? 0 : NLM_F_ACK), seq, pid: 0 }, body);
    for (;;) {
      const n = Number(netCalls.sendto(this.fd, msg, msg.length, 0, this.addr, SOCKADDR_NL_LEN));
      if (n >= 0) break;
      const e = lastErrno();
      if (e !== EINTR) throw new NetlinkError(`${opText(op)} (send)`, e);
    }
    const messages: NetlinkMessage[] = [];
    let interrupted = false;
    for (;;) {
      for (const m of parseMessages(this.receive(op))) {
        if (m.seq !== seq || m.pid !== this.portId) continue; // a stale answer to an earlier, timed-out request
        if (m.type === NLMSG_ERROR) {
          const e = decodeErrorBody(m.body, m.flags);
          if (e.errno !== 0) throw new NetlinkError(opText(op), e.errno, e.message);
          return { messages, interrupted };
        }
        if (m.type === NLMSG_DONE) {
          const e = decodeErrorBody(m.body, m.flags, true);
          if (e.errno !== 0) throw new NetlinkError(opText(op), e.errno, e.message);
          return { messages, interrupted };
        }
        if (m.type === NLMSG_NOOP) continue;
        if (m.type === NLMSG_OVERRUN) throw new BpfError('NETLINK_ERR', `${opText(op)}: netlink overrun (data lost)`);
        if ((m.flags & NLM_F_DUMP_INTR) !== 0) interrupted = true;
        messages.push(m);
      }
    }
  }

  /** Receives one datagram (growing the buffer to fit it) and returns a copy. */
  private receive(op: OpText): Buffer {
    const size = this.recvRetry(this.rx, 0, MSG_PEEK | MSG_TRUNC, op);
    if (size > this.rx.length) this.rx = Buffer.alloc(size);
    const n = this.recvRetry(this.rx, this.rx.length, 0, op);
    return Buffer.from(this.rx.subarray(0, n));
  }

  private recvRetry(buf: Buffer, len: number, flags: number, op: OpText): number {
    for (;;) {
      const n = Number(netCalls.recv(this.fd, buf, len, flags));
      if (n >= 0) return n;
      const e = lastErrno();
      if (e === EINTR) continue;
      throw new NetlinkError(`${opText(op)} (receive${e === EAGAIN ? ', timed out' : ''})`, e);
    }
  }
}

function openSocket(): number {
  const fd = netCalls.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE) as number;
  if (fd < 0) throw new NetlinkError('open netlink socket', lastErrno());
  return fd;
}

function setReceiveTimeout(fd: number, ms: number): void {
  // struct timeval: { long tv_sec; long tv_usec; } (8-byte longs on 64-bit, 4 on 32-bit)
  const long = process.arch === 'ia32' || process.arch === 'arm' ? 4 : 8;
  const tv = Buffer.alloc(2 * long);
  const sec = Math.floor(ms / 1000);
  const usec = Math.round((ms % 1000) * 1000);
  if (long === 8) {
    tv.writeBigInt64LE(BigInt(sec), 0);
    tv.writeBigInt64LE(BigInt(usec), 8);
  } else {
    tv.writeInt32LE(sec, 0);
    tv.writeInt32LE(usec, 4);
  }
  if ((netCalls.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, tv.length) as number) < 0) {
    throw new NetlinkError('set netlink receive timeout', lastErrno());
  }
}

/**
 * Where a netlink operation runs. `socket`: use this open socket (and its
 * namespace). Otherwise a short-lived socket is opened in `netnsFd` /
 * `netnsPath`, or in the calling thread's namespace, and closed afterwards.
 */
export interface NetlinkTarget {
  socket?: NetlinkSocket;
  netnsFd?: number;
  netnsPath?: string;
}

/** Runs `fn` with the socket `target` designates (see {@link NetlinkTarget}). */
export function withSocket<T>(target: NetlinkTarget | undefined, fn: (socket: NetlinkSocket) => T): T {
  if (target?.socket !== undefined) return fn(target.socket);
  const opts: NetlinkSocketOptions = {};
  if (target?.netnsFd !== undefined) opts.netnsFd = target.netnsFd;
  if (target?.netnsPath !== undefined) opts.netnsPath = target.netnsPath;
  const socket = new NetlinkSocket(opts);
  try {
    return fn(socket);
  } finally {
    socket.close();
  }
}

/** Is `err` a {@link NetlinkError} with one of these errno names? */
export function isNetlinkError(err: unknown, ...names: string[]): err is NetlinkError {
  return err instanceof NetlinkError && (names.length === 0 || names.includes(err.errnoName));
}
