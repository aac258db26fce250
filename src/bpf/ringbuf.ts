/**
 * A reader for `BPF_MAP_TYPE_RINGBUF` maps, written directly against the
 * kernel's memory-mapped ring (no libbpf, no copies, no per-record FFI call).
 *
 * Layout (kernel/bpf/ringbuf.c): page 0 holds `consumer_pos` (the reader
 * writes it), page 1 holds `producer_pos` (read-only), then the data area of
 * `size` bytes is mapped twice in a row so a record that wraps around the end
 * is still contiguous in memory. Each record is an 8-byte header — `u32 len`
 * (bit 31 BUSY: reserved, not committed yet; bit 30 DISCARD), `u32 pgoff` —
 * followed by `len` bytes of payload, padded to 8 bytes. Positions are u64
 * byte counters that only grow; a position's place in the ring is
 * `pos & (size - 1)`.
 *
 * Synchronous: {@link RingBuffer.consume}. Event-loop friendly:
 * {@link RingBuffer.start} waits with `epoll_wait` on a libuv worker thread
 * and drains on the main thread.
 */
import {
  epollEventSize, epollWaitAsync, errno, eventfdCreate, eventfdDrain, eventfdSignal, isMapFailed, libcCalls, pageSize, viewOf,
  type Pointer,
} from './sys.js';
import { BpfSyscallError, BpfUsageError } from './errors.js';
import { closeFd } from './fd.js';
import { mapInfo } from './map.js';
import { MapType, mapTypeName } from './types.js';

const BUSY_BIT = 0x80000000;
const DISCARD_BIT = 0x40000000;
const LEN_MASK = 0x3fffffff;
const HDR_SIZE = 8;

const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_SHARED = 0x1;
const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLLIN = 0x1;
const EINTR = 4;

/**
 * Whether record headers are read with `Atomics.load` (acquire ordering: the
 * payload is read only after the header says it is committed). x86-64 orders
 * loads in hardware (TSO), so plain reads there are as good and ~2× faster on
 * the header walk; weakly ordered CPUs (arm64, …) need the atomic load.
 */
const ACQUIRE_HEADER_LOADS = process.arch !== 'x64' && process.arch !== 'ia32';

/** Most bytes consumed before the consumer position is published mid-drain (frees space for the producer early). */
const COMMIT_EVERY = 256 * 1024;

/** Largest ring the reader maps (its data area is mapped twice, so 2 GiB of address space). */
export const MAX_RING_SIZE = 1 << 30;

/**
 * Receives one record: `view` spans the whole mapped data area; the record's
 * payload is `length` bytes at `offset` (8-byte aligned, host byte order).
 * The memory is the ring itself: it is valid only until the callback returns,
 * after which the producer may overwrite it. Copy what you keep.
 */
export type RecordHandler = (view: DataView, offset: number, length: number) => void;

/** Counters of a {@link RingBuffer}, since it was opened. */
export interface RingBufferStats {
  /** Records delivered to a callback (or skipped with {@link RingBuffer.skip}). */
  records: number;
  /** Records the producer discarded (`bpf_ringbuf_discard`); consumed, not delivered. */
  discarded: number;
  /** Payload bytes of the delivered records (headers and padding excluded). */
  bytes: number;
  /**
   * Times the reader found the ring inconsistent (a record longer than the
   * data the producer published, or positions more than a ring apart) and
   * resynchronised by jumping to the producer position. The records in
   * between are lost; nothing outside the ring is ever read.
   */
  malformed: number;
  /** Records the producer could not reserve, from `lostCounter` (absent without one). */
  lost?: number;
}

/** Options of {@link RingBuffer.open}. */
export interface RingBufferOptions {
  /**
   * Producer-side losses (reservations that failed because the ring was
   * full), as the BPF program counts them in a map; reported as `lost` by
   * {@link RingBuffer.stats}.
   */
  lostCounter?: () => number;
}

/** Options of {@link RingBuffer.start}. */
export interface StartOptions {
  /**
   * Longest single `epoll_wait`, in ms (default 100): how late records are
   * picked up if a wake-up were ever missed. {@link RingBuffer.stop} does not
   * wait for it (it wakes the pending wait through an eventfd).
   */
  pollTimeoutMs?: number;
  /**
   * Most records drained per wake-up before the loop yields back to the event
   * loop (default 65536; the rest are picked up right after).
   */
  maxRecordsPerWake?: number;
  /**
   * Called when the loop stops on an error (a callback threw, or `epoll_wait`
   * failed). Without it, the error is rethrown as an uncaught exception.
   */
  onError?: (err: unknown) => void;
}

/**
 * A consumer of one `BPF_MAP_TYPE_RINGBUF` map. One reader per map: the
 * consumer position lives in the map and is shared by every reader of it.
 */
export class RingBuffer {
  /** The reader's own descriptor of the map. */
  readonly fd: number;
  /** Bytes in the data area (the map's max_entries, a power of two). */
  readonly size: number;

  private readonly mask: number;
  private readonly maskBig: bigint;
  private readonly page: number;
  private consumerPtr: Pointer;
  private producerPtr: Pointer;
  /** consumer_pos (u64, we write it). */
  private consumerPos: BigUint64Array;
  /** producer_pos (u64, the kernel writes it). */
  private producerPos: BigUint64Array;
  /** Record headers as host-endian u32s, indexed by data offset / 4. */
  private headers: Uint32Array;
  /** The data area (2 × size, double-mapped). */
  private data: DataView;
  private readonly lostCounter: (() => number) | undefined;

  private nRecords = 0;
  private nDiscarded = 0;
  private nBytes = 0;
  private nMalformed = 0;

  private consuming = false;
  private closed = false;
  private releasePending = false;

  private epfd = -1;
  /** Watched by the epoll set next to the map, so stop() and close() can end a wait at once. */
  private wakeFd = -1;
  private readonly events = Buffer.alloc(epollEventSize);
  private running = false;
  private waitPending = false;
  private stopWaiters: (() => void)[] = [];

  private constructor(fd: number, size: number, options: RingBufferOptions) {
    this.fd = fd;
    this.size = size;
    this.mask = size - 1;
    this.maskBig = BigInt(size - 1);
    this.page = pageSize();
    this.lostCounter = options.lostCounter;

    const consumer = libcCalls.mmap(null, this.page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (isMapFailed(consumer)) throw new BpfSyscallError(`mmap the consumer page of ring buffer (fd ${fd})`, errno());
    const producerLen = this.page + 2 * size;
    const producer = libcCalls.mmap(null, producerLen, PROT_READ, MAP_SHARED, fd, this.page);
    if (isMapFailed(producer)) {
      const e = errno();
      libcCalls.munmap(consumer, this.page);
      throw new BpfSyscallError(`mmap the producer page and data of ring buffer (fd ${fd}, ${size} bytes)`, e);
    }
    this.consumerPtr = consumer;
    this.producerPtr = producer;
    const consumerBuf = viewOf(consumer, this.page);
    const producerBuf = viewOf(producer, producerLen);
    this.consumerPos = new BigUint64Array(consumerBuf, 0, 1);
    this.producerPos = new BigUint64Array(producerBuf, 0, 1);
    this.headers = new Uint32Array(producerBuf, this.page, (2 * size) / 4);
    this.data = new DataView(producerBuf, this.page, 2 * size);
  }

  /**
   * Opens a reader on the ring buffer map behind `mapFd`. The descriptor is
   * duplicated: the reader owns its copy and the caller keeps its own.
   */
  static open(mapFd: number, options: RingBufferOptions = {}): RingBuffer {
    const info = mapInfo(mapFd);
    if (info.type !== MapType.RingBuf) {
      throw new BpfUsageError(`map ${info.name} is a ${mapTypeName(info.type)} map, not a ring buffer`);
    }
    const size = info.maxEntries;
    if ((size & (size - 1)) !== 0 || size < pageSize()) {
      throw new BpfUsageError(`ring buffer ${info.name}: size ${size} is not a power of two of at least a page`);
    }
    if (size > MAX_RING_SIZE) throw new BpfUsageError(`ring buffer ${info.name}: ${size} bytes is over the reader's limit of ${MAX_RING_SIZE}`);
    const fd = libcCalls.dup(mapFd) as number;
    if (fd < 0) throw new BpfSyscallError(`duplicate descriptor of ring buffer ${info.name}`, errno());
    try {
      return new RingBuffer(fd, size, options);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new BpfUsageError('ring buffer reader is closed');
  }

  /** Bytes published by the producer and not consumed yet (records, headers, padding). */
  pending(): number {
    this.assertOpen();
    return Number(Atomics.load(this.producerPos, 0) - Atomics.load(this.consumerPos, 0));
  }

  /** Whether the {@link start} loop is running. */
  get isRunning(): boolean {
    return this.running;
  }

  /**
   * Delivers the records committed so far, in order, without copying them,
   * and frees their space in the ring. Stops early at a record the producer
   * has reserved but not committed yet (and everything after it), or after
   * `max` records. Records committed while this runs are left for the next
   * call. Discarded records are skipped and counted.
   *
   * If `onRecord` throws, the record it was given counts as consumed (a bad
   * record cannot wedge the reader) and the error propagates.
   *
   * @returns the number of records delivered.
   */
  consume(onRecord: RecordHandler, max = Infinity): number {
    return this.drain(onRecord, max);
  }

  /**
   * Like {@link consume}, with each record as a Buffer over the ring memory
   * (no copy: valid only during the call).
   */
  consumeBuffers(fn: (buf: Buffer) => void, max = Infinity): number {
    const ab = this.data.buffer;
    const base = this.data.byteOffset;
    return this.drain((_view, offset, length) => fn(Buffer.from(ab, base + offset, length)), max);
  }

  /** Consumes every committed record without delivering it; returns how many (counted as records). */
  skip(max = Infinity): number {
    return this.drain(null, max);
  }

  private drain(onRecord: RecordHandler | null, max: number): number {
    this.assertOpen();
    if (this.consuming) throw new BpfUsageError('ring buffer consume is not reentrant (called from a record callback?)');
    if (!(max > 0)) return 0;
    const headers = this.headers;
    const view = this.data;
    const mask = this.mask;
    const size = this.size;
    const acquire = ACQUIRE_HEADER_LOADS;

    let cons = Atomics.load(this.consumerPos, 0);
    const avail = Number(Atomics.load(this.producerPos, 0) - cons);
    if (avail === 0) return 0;
    if (avail < 0 || avail > size) {
      // Positions more than a ring apart (or the consumer ahead of the
      // producer): not a state the kernel produces. Resynchronise.
      this.nMalformed++;
      Atomics.store(this.consumerPos, 0, Atomics.load(this.producerPos, 0));
      return 0;
    }
    const start = Number(cons & this.maskBig);

    const commitEvery = Math.max(this.page, Math.min(size >>> 2, COMMIT_EVERY));
    let nextCommit = commitEvery;
    let pos = 0;
    let delivered = 0;
    let discarded = 0;
    let bytes = 0;
    this.consuming = true;
    try {
      while (pos < avail) {
        const off = (start + pos) & mask;
        const len = acquire ? Atomics.load(headers, off >>> 2) : headers[off >>> 2] as number;
        if ((len & BUSY_BIT) !== 0) break;
        const n = len & LEN_MASK;
        const total = (n + HDR_SIZE + 7) & ~7;
        if (total > avail - pos) {
          // The header claims more than the producer published: skip to the
          // producer position, which is always a record boundary.
          this.nMalformed++;
          pos = avail;
          break;
        }
        pos += total;
        if (pos >= nextCommit) {
          // Everything before this record has been handed out: give it back.
          Atomics.store(this.consumerPos, 0, cons + BigInt(pos - total));
          nextCommit = pos + commitEvery;
        }
        if ((len & DISCARD_BIT) !== 0) {
          discarded++;
          continue;
        }
        delivered++;
        bytes += n;
        if (onRecord !== null) onRecord(view, off + HDR_SIZE, n);
        if (delivered >= max) break;
      }
    } finally {
      this.consuming = false;
      if (pos > 0) {
        cons += BigInt(pos);
        Atomics.store(this.consumerPos, 0, cons);
      }
      this.nRecords += delivered;
      this.nDiscarded += discarded;
      this.nBytes += bytes;
      if (this.releasePending) this.release();
    }
    return delivered;
  }

  /** Counters since the reader was opened. */
  stats(): RingBufferStats {
    const s: RingBufferStats = {
      records: this.nRecords,
      discarded: this.nDiscarded,
      bytes: this.nBytes,
      malformed: this.nMalformed,
    };
    if (this.lostCounter) s.lost = this.lostCounter();
    return s;
  }

  /**
   * Starts delivering records as they arrive, without blocking the event
   * loop: `epoll_wait` on the map runs on a libuv worker thread (koffi async
   * call), and each wake-up drains the ring on the main thread with
   * {@link consume}. The loop keeps the process alive until {@link stop} or
   * {@link close}. While it runs it occupies one libuv threadpool thread.
   */
  start(onRecord: RecordHandler, options: StartOptions = {}): void {
    this.assertOpen();
    if (this.running) throw new BpfUsageError('ring buffer reader is already running');
    if (this.waitPending) throw new BpfUsageError('ring buffer reader is still stopping: await stop() first');
    const timeout = options.pollTimeoutMs ?? 100;
    const maxPerWake = options.maxRecordsPerWake ?? 65536;
    if (!Number.isInteger(timeout) || timeout < 0) throw new BpfUsageError(`pollTimeoutMs must be a non-negative integer, got ${timeout}`);
    if (!(maxPerWake > 0)) throw new BpfUsageError(`maxRecordsPerWake must be positive, got ${maxPerWake}`);
    if (this.epfd < 0) this.createEpoll();
    this.running = true;

    const fail = (err: unknown): void => {
      this.running = false;
      this.resolveStopWaiters();
      if (options.onError) options.onError(err);
      else process.nextTick(() => { throw err; });
    };
    const wait = (): void => {
      this.waitPending = true;
      epollWaitAsync(this.epfd, this.events, 1, timeout, (err, n, e) => {
        this.waitPending = false;
        if (!this.running || this.closed) eventfdDrain(this.wakeFd);
        if (this.closed) {
          this.closeEpoll();
          this.resolveStopWaiters();
          return;
        }
        if (!this.running) {
          this.resolveStopWaiters();
          return;
        }
        if (err) return fail(err);
        if (n < 0 && e !== EINTR) return fail(new BpfSyscallError(`epoll_wait on ring buffer (fd ${this.fd})`, e));
        try {
          // Drain after every wake-up, timeouts included.
          this.consume(onRecord, maxPerWake);
        } catch (cbErr) {
          return fail(cbErr);
        }
        if (this.running && !this.closed) wait();
        else this.resolveStopWaiters();
      });
    };
    wait();
  }

  /**
   * Stops the {@link start} loop. Resolves once the pending `epoll_wait` has
   * returned (it is woken at once) and no callback will run again. Records
   * still in the ring stay there for {@link consume}.
   */
  stop(): Promise<void> {
    this.running = false;
    if (!this.waitPending) return Promise.resolve();
    eventfdSignal(this.wakeFd);
    return new Promise((resolve) => this.stopWaiters.push(resolve));
  }

  private resolveStopWaiters(): void {
    const waiters = this.stopWaiters;
    this.stopWaiters = [];
    for (const w of waiters) w();
  }

  /** Creates the epoll set: the map (readable when data is published) and the wake-up eventfd. */
  private createEpoll(): void {
    const epfd = libcCalls.epollCreate1(EPOLL_CLOEXEC) as number;
    if (epfd < 0) throw new BpfSyscallError('epoll_create1', errno());
    const wakeFd = eventfdCreate();
    if (wakeFd < 0) {
      const e = errno();
      closeFd(epfd);
      throw new BpfSyscallError('eventfd', e);
    }
    const ev = Buffer.alloc(epollEventSize); // struct epoll_event { u32 events; u64 data; }
    ev.writeUInt32LE(EPOLLIN, 0);
    for (const [fd, what] of [[this.fd, `ring buffer (fd ${this.fd})`], [wakeFd, 'eventfd']] as const) {
      if ((libcCalls.epollCtl(epfd, EPOLL_CTL_ADD, fd, ev) as number) < 0) {
        const e = errno();
        closeFd(epfd);
        closeFd(wakeFd);
        throw new BpfSyscallError(`epoll_ctl add ${what}`, e);
      }
    }
    this.epfd = epfd;
    this.wakeFd = wakeFd;
  }

  private closeEpoll(): void {
    closeFd(this.epfd);
    closeFd(this.wakeFd);
    this.epfd = -1;
    this.wakeFd = -1;
  }

  /**
   * Stops the loop, unmaps the ring and closes the reader's descriptors. Safe
   * to call more than once, and from a record callback (the ring is released
   * when the callback's drain ends). A pending wait is woken; its epoll
   * descriptors are closed when it returns (`await stop()` first to wait
   * for that).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.running = false;
    if (this.consuming) this.releasePending = true;
    else this.release();
    if (this.waitPending) {
      eventfdSignal(this.wakeFd);
    } else {
      this.closeEpoll();
      this.resolveStopWaiters();
    }
  }

  private release(): void {
    this.releasePending = false;
    // Drop the views before unmapping so nothing of ours points into the hole.
    const empty = new ArrayBuffer(16);
    this.consumerPos = new BigUint64Array(empty, 0, 1);
    this.producerPos = new BigUint64Array(empty, 8, 1);
    this.headers = new Uint32Array(empty);
    this.data = new DataView(empty);
    libcCalls.munmap(this.consumerPtr, this.page);
    libcCalls.munmap(this.producerPtr, this.page + 2 * this.size);
    this.consumerPtr = null;
    this.producerPtr = null;
    closeFd(this.fd);
  }
}
