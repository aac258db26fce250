/**
 * The only module that touches the FFI. It binds the few libc calls and the
 * libbpf 1.x functions the library uses, and exposes the raw `bpf()` syscall.
 *
 * Everything here is synchronous and allocation-free on the hot paths: map
 * operations pass the numeric address of long-lived attribute buffers.
 */
import koffi, { type LibraryHandle } from 'koffi';

/** An opaque pointer returned by libbpf (a `struct bpf_object *`, …). */
export type Pointer = unknown;

function loadLibrary(name: string, hint: string): LibraryHandle {
  try {
    return koffi.load(name);
  } catch (err) {
    throw new Error(`cannot load ${name}: ${(err as Error).message}. ${hint}`);
  }
}

const libc = loadLibrary('libc.so.6', 'Waggle needs glibc.');
const libbpf = loadLibrary('libbpf.so.1', 'Install libbpf 1.x (Debian: apt-get install libbpf1).');

/** `bpf()` syscall numbers by architecture (asm/unistd.h). */
const SYS_BPF: Record<string, number> = { x64: 321, arm64: 280, ia32: 357, arm: 386, riscv64: 280 };
const sysBpfNumber = SYS_BPF[process.arch];
if (sysBpfNumber === undefined) throw new Error(`unsupported architecture ${process.arch}`);

const syscallBuf = libc.func('int syscall(long nr, int cmd, void *attr, uint32_t size)');
const syscallAddr = libc.func('int syscall(long nr, int cmd, intptr_t attr, uint32_t size)');

/** The calling thread's errno right after an FFI call. */
export function errno(): number {
  return koffi.errno();
}

/** `bpf(cmd, attr, size)`; returns the result (-1 on error, then read {@link errno}). */
export function bpf(cmd: number, attr: Buffer, size = attr.length): number {
  return syscallBuf(sysBpfNumber, cmd, attr, size) as number;
}

/**
 * `bpf(cmd, attr, size)` with `attr` given as a raw address. The caller keeps the
 * buffer behind the address alive (see {@link addressOf}). Used on hot paths.
 */
export function bpfAt(cmd: number, attrAddress: number, size: number): number {
  return syscallAddr(sysBpfNumber, cmd, attrAddress, size) as number;
}

/** The address of a Buffer's memory, as a number (valid while the Buffer lives). */
export function addressOf(buf: Buffer | ArrayBuffer | Uint8Array): number {
  return Number(koffi.address(buf));
}

/** A view of `length` bytes of native memory at `ptr` (no copy). */
export function viewOf(ptr: Pointer, length: number): ArrayBuffer {
  return koffi.view(ptr, length);
}

/** Reads a NUL-terminated C string at `ptr` (empty string for NULL). */
export function cString(ptr: Pointer): string {
  if (ptr === null || ptr === undefined) return '';
  if (typeof ptr === 'string') return ptr; // koffi decodes `const char *` results itself
  return koffi.decode(ptr, 'char', -1) as string;
}

// ---- libc ----------------------------------------------------------------

export const libcCalls = {
  close: libc.func('int close(int fd)'),
  open: libc.func('int open(const char *path, int flags)'),
  setns: libc.func('int setns(int fd, int nstype)'),
  ifNameToIndex: libc.func('unsigned int if_nametoindex(const char *name)'),
  mmap: libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, intptr_t off)'),
  munmap: libc.func('int munmap(void *addr, size_t len)'),
  mount: libc.func('int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const char *data)'),
  umount2: libc.func('int umount2(const char *target, int flags)'),
  epollCreate1: libc.func('int epoll_create1(int flags)'),
  epollCtl: libc.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
  epollWait: libc.func('int epoll_wait(int epfd, _Out_ uint8_t *events, int maxevents, int timeout)'),
  vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *ap)'),
  dup: libc.func('int dup(int fd)'),
};

/** `MAP_FAILED` as returned by koffi for `(void *)-1`. */
export function isMapFailed(ptr: Pointer): boolean {
  return ptr === null || koffi.address(ptr) === 0xffffffffffffffffn;
}

/** Address of a native pointer as a number. */
export function pointerAddress(ptr: Pointer): number {
  return Number(koffi.address(ptr));
}

// ---- libbpf --------------------------------------------------------------

koffi.opaque('bpf_object');
koffi.opaque('bpf_map');
koffi.opaque('bpf_program');
koffi.opaque('btf');

/** `struct bpf_object_open_opts` (libbpf 1.1 layout; `sz` tells libbpf which fields exist). */
export const OpenOpts = koffi.struct('bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
  attach_prog_fd: 'uint32_t',
  kconfig: 'const char *',
  btf_custom_path: 'const char *',
  kernel_log_buf: 'void *',
  kernel_log_size: 'size_t',
  kernel_log_level: 'uint32_t',
});

/** `struct bpf_tc_hook` and `struct bpf_tc_opts` (libbpf/bpf.h / libbpf.h). */
export const TcHook = koffi.struct('bpf_tc_hook', {
  sz: 'size_t',
  ifindex: 'int',
  attach_point: 'int',
  parent: 'uint32_t',
});
export const TcOpts = koffi.struct('bpf_tc_opts', {
  sz: 'size_t',
  prog_fd: 'int',
  flags: 'uint32_t',
  prog_id: 'uint32_t',
  handle: 'uint32_t',
  priority: 'uint32_t',
});

export const printFn = koffi.proto('int libbpf_print_fn_t(int level, const char *fmt, void *args)');

export const libbpfCalls = {
  objectOpenFile: libbpf.func('bpf_object *bpf_object__open_file(const char *path, bpf_object_open_opts *opts)'),
  objectLoad: libbpf.func('int bpf_object__load(bpf_object *obj)'),
  objectClose: libbpf.func('void bpf_object__close(bpf_object *obj)'),
  objectName: libbpf.func('const char *bpf_object__name(bpf_object *obj)'),
  objectBtf: libbpf.func('btf *bpf_object__btf(bpf_object *obj)'),
  objectNextMap: libbpf.func('bpf_map *bpf_object__next_map(bpf_object *obj, bpf_map *prev)'),
  objectNextProgram: libbpf.func('bpf_program *bpf_object__next_program(bpf_object *obj, bpf_program *prev)'),

  mapName: libbpf.func('const char *bpf_map__name(bpf_map *map)'),
  mapType: libbpf.func('int bpf_map__type(bpf_map *map)'),
  mapKeySize: libbpf.func('uint32_t bpf_map__key_size(bpf_map *map)'),
  mapValueSize: libbpf.func('uint32_t bpf_map__value_size(bpf_map *map)'),
  mapMaxEntries: libbpf.func('uint32_t bpf_map__max_entries(bpf_map *map)'),
  mapFlags: libbpf.func('uint32_t bpf_map__map_flags(bpf_map *map)'),
  mapBtfKeyTypeId: libbpf.func('uint32_t bpf_map__btf_key_type_id(bpf_map *map)'),
  mapBtfValueTypeId: libbpf.func('uint32_t bpf_map__btf_value_type_id(bpf_map *map)'),
  mapInnerMap: libbpf.func('bpf_map *bpf_map__inner_map(bpf_map *map)'),
  mapIsInternal: libbpf.func('bool bpf_map__is_internal(bpf_map *map)'),
  mapSetMaxEntries: libbpf.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
  mapInitialValue: libbpf.func('void *bpf_map__initial_value(bpf_map *map, _Out_ size_t *psize)'),
  mapSetInitialValue: libbpf.func('int bpf_map__set_initial_value(bpf_map *map, const void *data, size_t size)'),
  mapReuseFd: libbpf.func('int bpf_map__reuse_fd(bpf_map *map, int fd)'),
  mapFd: libbpf.func('int bpf_map__fd(bpf_map *map)'),

  programName: libbpf.func('const char *bpf_program__name(bpf_program *prog)'),
  programSectionName: libbpf.func('const char *bpf_program__section_name(bpf_program *prog)'),
  programType: libbpf.func('int bpf_program__type(bpf_program *prog)'),
  programExpectedAttachType: libbpf.func('int bpf_program__expected_attach_type(bpf_program *prog)'),
  programInsnCount: libbpf.func('size_t bpf_program__insn_cnt(bpf_program *prog)'),
  programFd: libbpf.func('int bpf_program__fd(bpf_program *prog)'),
  programSetAutoload: libbpf.func('int bpf_program__set_autoload(bpf_program *prog, bool autoload)'),
  programSetLogBuf: libbpf.func('int bpf_program__set_log_buf(bpf_program *prog, void *log_buf, size_t log_size)'),

  btfTypeCount: libbpf.func('uint32_t btf__type_cnt(btf *btf)'),
  btfTypeById: libbpf.func('void *btf__type_by_id(btf *btf, uint32_t id)'),
  btfNameByOffset: libbpf.func('const char *btf__name_by_offset(btf *btf, uint32_t offset)'),
  btfFree: libbpf.func('void btf__free(btf *btf)'),
  btfParse: libbpf.func('btf *btf__parse(const char *path, void *ext)'),

  tcHookCreate: libbpf.func('int bpf_tc_hook_create(bpf_tc_hook *hook)'),
  tcHookDestroy: libbpf.func('int bpf_tc_hook_destroy(bpf_tc_hook *hook)'),
  tcAttach: libbpf.func('int bpf_tc_attach(bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
  tcDetach: libbpf.func('int bpf_tc_detach(bpf_tc_hook *hook, bpf_tc_opts *opts)'),
  tcQuery: libbpf.func('int bpf_tc_query(bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),

  numPossibleCpus: libbpf.func('int libbpf_num_possible_cpus()'),
  setPrint: libbpf.func('void *libbpf_set_print(libbpf_print_fn_t *fn)'),
};

/** Registers a JS function as libbpf's print callback (called synchronously). */
export function registerPrint(fn: (level: number, fmt: Pointer, args: Pointer) => number): void {
  const cb = koffi.register(fn, koffi.pointer(printFn));
  libbpfCalls.setPrint(cb);
}

/** Formats a libbpf printf-style message with the C library. */
export function formatVaList(fmt: Pointer, args: Pointer): string {
  const buf = Buffer.alloc(1024);
  const n = libcCalls.vsnprintf(buf, buf.length, fmt, args) as number;
  return buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1))).toString('utf8');
}

/** Number of possible CPUs (the per-CPU value count), cached. */
let possibleCpus = 0;
export function numPossibleCpus(): number {
  if (possibleCpus === 0) {
    const n = libbpfCalls.numPossibleCpus() as number;
    if (n <= 0) throw new Error(`cannot read the number of possible CPUs (error ${-n})`);
    possibleCpus = n;
  }
  return possibleCpus;
}

/** Is `ptr` a NULL pointer from the FFI? */
export function isNull(ptr: Pointer): boolean {
  return ptr === null || ptr === undefined || koffi.address(ptr) === 0n;
}

/** `sizeof(struct bpf_tc_hook)` and `sizeof(struct bpf_tc_opts)`, for their `sz` fields. */
export const tcHookSize: number = koffi.sizeof(TcHook);
export const tcOptsSize: number = koffi.sizeof(TcOpts);

// ---- ring buffers (src/bpf/ringbuf.ts, bench/ringbuf.ts) ------------------

const sysconf = libc.func('long sysconf(int name)');
const SC_PAGESIZE = 30; // glibc, every Linux architecture
let cachedPageSize = 0;

/** The system page size in bytes (`sysconf(_SC_PAGESIZE)`), cached. */
export function pageSize(): number {
  if (cachedPageSize === 0) {
    const n = Number(sysconf(SC_PAGESIZE));
    if (!Number.isInteger(n) || n <= 0 || (n & (n - 1)) !== 0) throw new Error(`sysconf(_SC_PAGESIZE) returned ${n}`);
    cachedPageSize = n;
  }
  return cachedPageSize;
}

/** `sizeof(struct epoll_event)`: packed (12 bytes) on x86-64, naturally aligned (16) elsewhere. */
export const epollEventSize: number = process.arch === 'x64' ? 12 : 16;

/**
 * `epoll_wait(epfd, events, maxEvents, timeoutMs)` run on a libuv worker thread
 * (koffi's `.async`), so the event loop keeps running while it blocks. `done`
 * runs on the main thread with the result and the worker's errno. Keep `events`
 * alive and `epfd` open until `done` has run.
 */
export function epollWaitAsync(
  epfd: number,
  events: Buffer,
  maxEvents: number,
  timeoutMs: number,
  done: (err: Error | null, result: number, errno: number) => void,
): void {
  libcCalls.epollWait.async(epfd, events, maxEvents, timeoutMs, (err: Error | null, result: number) => {
    done(err, err ? -1 : result, koffi.errno());
  });
}

const eventfdCalls = {
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  read: libc.func('intptr_t read(int fd, _Out_ uint8_t *buf, size_t count)'),
  write: libc.func('intptr_t write(int fd, const uint8_t *buf, size_t count)'),
};
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

/** A non-blocking, close-on-exec `eventfd` (counter 0); returns -1 on error (see {@link errno}). */
export function eventfdCreate(): number {
  return eventfdCalls.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) as number;
}

/** Adds 1 to an eventfd counter, making it readable (wakes its pollers). */
export function eventfdSignal(fd: number): void {
  const one = Buffer.alloc(8);
  one.writeBigUInt64LE(1n);
  eventfdCalls.write(fd, one, 8);
}

/** Resets a non-blocking eventfd counter to 0 (no-op when it is 0). */
export function eventfdDrain(fd: number): void {
  eventfdCalls.read(fd, Buffer.alloc(8), 8);
}

koffi.opaque('ring_buffer');

/** `ring_buffer_sample_fn`: `int (*)(void *ctx, void *data, size_t size)`. */
export const ringBufferSampleFn = koffi.proto('int ring_buffer_sample_fn(void *ctx, void *data, size_t size)');

/** libbpf's own ring buffer consumer (`struct ring_buffer`), for comparison with the hand-written reader. */
export const libbpfRingBufferCalls = {
  new: libbpf.func('ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn *sample_cb, void *ctx, const void *opts)'),
  consume: libbpf.func('int ring_buffer__consume(ring_buffer *rb)'),
  poll: libbpf.func('int ring_buffer__poll(ring_buffer *rb, int timeout_ms)'),
  free: libbpf.func('void ring_buffer__free(ring_buffer *rb)'),
};

/** A libbpf `struct ring_buffer` whose sample callback is a JS function. */
export interface LibbpfRingBuffer {
  /** `ring_buffer__consume`: drains without waiting; returns records consumed or -errno. */
  consume(): number;
  /** `ring_buffer__poll`: waits up to `timeoutMs` (blocking this thread), then drains. */
  poll(timeoutMs: number): number;
  /** Frees the ring buffer and releases the callback slot. Safe to call twice. */
  free(): void;
}

/**
 * `ring_buffer__new(mapFd, cb)` with `onSample(data, size)` as the callback. `data`
 * is the record's address (read it with {@link viewOf}); return 0 to continue,
 * a negative value to stop consuming. Throws with the errno on failure.
 */
export function libbpfRingBufferNew(mapFd: number, onSample: (data: Pointer, size: number) => number): LibbpfRingBuffer {
  const cb = koffi.register((_ctx: Pointer, data: Pointer, size: number | bigint) => onSample(data, Number(size)), koffi.pointer(ringBufferSampleFn));
  const rb = libbpfRingBufferCalls.new(mapFd, cb, null, null);
  if (isNull(rb)) {
    const e = errno();
    koffi.unregister(cb);
    throw new Error(`ring_buffer__new on map fd ${mapFd} failed (errno ${e})`);
  }
  let freed = false;
  return {
    consume: () => libbpfRingBufferCalls.consume(rb) as number,
    poll: (timeoutMs) => libbpfRingBufferCalls.poll(rb, timeoutMs) as number,
    free: () => {
      if (freed) return;
      freed = true;
      libbpfRingBufferCalls.free(rb);
      koffi.unregister(cb);
    },
  };
}

// ---- sockets and namespaces (src/netlink/) --------------------------------

/**
 * The libc calls behind Waggle's rtnetlink client and named network namespaces.
 * Buffers passed as `void *` are read or written in place. Return -1 on error
 * (read {@link errno} right after the call).
 */
export const netCalls = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t addrlen)'),
  getsockname: libc.func('int getsockname(int fd, void *addr, void *addrlen)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)'),
  sendto: libc.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
  recv: libc.func('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
  unshare: libc.func('int unshare(int flags)'),
};
