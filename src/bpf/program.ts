/**
 * Live programs: a descriptor plus what the kernel says about it, pinning,
 * and `BPF_PROG_TEST_RUN` (crafted packets in, verdict and packet out; and
 * XDP live frames, which transmit real frames at Mpps).
 */
import { addressOf, bpf, errno, libcCalls } from './sys.js';
import { BpfSyscallError, BpfUsageError } from './errors.js';
import { check, closeFd, getPinned, infoName, objectInfo, pinFd } from './fd.js';
import { Cmd, ProgramType } from './types.js';

/** What the kernel says about a loaded program. */
export interface ProgramInfo {
  type: ProgramType;
  id: number;
  name: string;
  tag: string;
  runCount: number;
  runTimeNs: number;
  verifiedInstructions: number;
}

/** Input of {@link Program.testRun}. */
export interface TestRunOptions {
  /** Packet bytes (for XDP/TC: an Ethernet frame). */
  data: Uint8Array;
  /** Program context (`struct __sk_buff` / `struct xdp_md`) bytes; optional. */
  ctx?: Uint8Array;
  /** Room for the output packet (default: input length + 256). */
  dataOutSize?: number;
  /** Room for the output context (default: the input context length). */
  ctxOutSize?: number;
  /** Runs of the program (the duration is averaged over them); default 1. */
  repeat?: number;
  /** `BPF_F_TEST_*` flags. */
  flags?: number;
  /** CPU to run on (with `BPF_F_TEST_RUN_ON_CPU`). */
  cpu?: number;
  /** Frames per batch in XDP live-frames mode. */
  batchSize?: number;
}

/** Output of {@link Program.testRun}. */
export interface TestRunResult {
  /** The program's return value (verdict). */
  retval: number;
  /** The packet after the program ran. */
  data: Buffer;
  /** The context after the program ran (when one was given). */
  ctx?: Buffer;
  /** Average nanoseconds per run, as the kernel measured. */
  durationNs: number;
}

/** `BPF_F_TEST_RUN_ON_CPU`. */
export const TEST_RUN_ON_CPU = 1;
/** `BPF_F_TEST_XDP_LIVE_FRAMES`: frames the program redirects or transmits leave for real. */
export const TEST_XDP_LIVE_FRAMES = 2;

/** A program loaded in the kernel. */
export class Program {
  readonly fd: number;
  readonly name: string;
  readonly type: ProgramType;
  readonly expectedAttachType: number;
  private closed = false;

  /** Wraps a program descriptor (the Program takes ownership). */
  constructor(fd: number, name: string, type: ProgramType, expectedAttachType = 0) {
    this.fd = fd;
    this.name = name;
    this.type = type;
    this.expectedAttachType = expectedAttachType;
  }

  /** Duplicates a descriptor so the copy can be closed independently. */
  static dup(fd: number, what: string): number {
    const copy = libcCalls.dup(fd) as number;
    if (copy < 0) throw new BpfSyscallError(`duplicate descriptor of ${what}`, errno());
    return copy;
  }

  /** Opens a program pinned at `path`. */
  static openPinned(path: string): Program {
    const fd = getPinned(path, 'program');
    const info = programInfo(fd);
    return new Program(fd, info.name, info.type);
  }

  /** What the kernel says about this program now. */
  info(): ProgramInfo {
    return programInfo(this.fd);
  }

  /** Pins the program at `path` on a bpffs. */
  pin(path: string): void {
    pinFd(this.fd, path, `program ${this.name}`);
  }

  /** Runs the program on a crafted packet with `BPF_PROG_TEST_RUN`. */
  testRun(opts: TestRunOptions): TestRunResult {
    const dataIn = Buffer.from(opts.data.buffer, opts.data.byteOffset, opts.data.byteLength);
    const live = ((opts.flags ?? 0) & TEST_XDP_LIVE_FRAMES) !== 0;
    // Live frames mode takes no output buffers.
    const dataOut = live ? null : Buffer.alloc(opts.dataOutSize ?? dataIn.length + 256);
    const ctxIn = opts.ctx ? Buffer.from(opts.ctx.buffer, opts.ctx.byteOffset, opts.ctx.byteLength) : null;
    const ctxOut = ctxIn && !live ? Buffer.alloc(opts.ctxOutSize ?? ctxIn.length) : null;
    const repeat = opts.repeat ?? 1;
    if (!Number.isInteger(repeat) || repeat < 1) throw new BpfUsageError(`repeat must be a positive integer, got ${repeat}`);

    const attr = Buffer.alloc(80);
    attr.writeUInt32LE(this.fd, 0);
    attr.writeUInt32LE(dataIn.length, 8);
    attr.writeUInt32LE(dataOut?.length ?? 0, 12);
    attr.writeBigUInt64LE(BigInt(addressOf(dataIn)), 16);
    if (dataOut) attr.writeBigUInt64LE(BigInt(addressOf(dataOut)), 24);
    attr.writeUInt32LE(repeat, 32);
    if (ctxIn) {
      attr.writeUInt32LE(ctxIn.length, 40);
      attr.writeBigUInt64LE(BigInt(addressOf(ctxIn)), 48);
    }
    if (ctxOut) {
      attr.writeUInt32LE(ctxOut.length, 44);
      attr.writeBigUInt64LE(BigInt(addressOf(ctxOut)), 56);
    }
    attr.writeUInt32LE(opts.flags ?? 0, 64);
    attr.writeUInt32LE(opts.cpu ?? 0, 68);
    attr.writeUInt32LE(opts.batchSize ?? 0, 72);
    check(bpf(Cmd.ProgTestRun, attr), () => `test run of program ${this.name}`);
    const outLen = attr.readUInt32LE(12);
    const result: TestRunResult = {
      retval: attr.readUInt32LE(4),
      data: dataOut ? dataOut.subarray(0, Math.min(outLen, dataOut.length)) : Buffer.alloc(0),
      durationNs: attr.readUInt32LE(36),
    };
    if (ctxOut) result.ctx = ctxOut.subarray(0, attr.readUInt32LE(44));
    return result;
  }

  /**
   * Sends `count` real copies of `frame` through an XDP program in live-frames
   * mode: frames it redirects (`bpf_redirect`) or transmits leave through the
   * device. `ingressIfindex` is the device the frames seem to arrive on.
   */
  sendLiveFrames(frame: Uint8Array, count: number, ingressIfindex: number, batchSize = 64): TestRunResult {
    if (this.type !== ProgramType.Xdp) throw new BpfUsageError(`program ${this.name} is not an XDP program`);
    const ctx = Buffer.alloc(24); // struct xdp_md
    ctx.writeUInt32LE(frame.length, 4); // data_end
    ctx.writeUInt32LE(ingressIfindex, 12);
    return this.testRun({ data: frame, ctx, repeat: count, flags: TEST_XDP_LIVE_FRAMES, batchSize });
  }

  /** Closes this handle; the program lives on while attached or pinned. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }
}

/** Reads `struct bpf_prog_info` for `fd`. */
export function programInfo(fd: number): ProgramInfo {
  const b = objectInfo(fd, 232, 'program');
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    tag: b.subarray(8, 16).toString('hex'),
    name: infoName(b, 64),
    runTimeNs: Number(b.readBigUInt64LE(192)),
    runCount: Number(b.readBigUInt64LE(200)),
    verifiedInstructions: b.readUInt32LE(216),
  };
}
