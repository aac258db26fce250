/** Kernel enums from linux/bpf.h that the library names (values are ABI). */

export enum MapType {
  Unspec = 0, Hash = 1, Array = 2, ProgArray = 3, PerfEventArray = 4, PerCpuHash = 5,
  PerCpuArray = 6, StackTrace = 7, CgroupArray = 8, LruHash = 9, LruPerCpuHash = 10,
  LpmTrie = 11, ArrayOfMaps = 12, HashOfMaps = 13, DevMap = 14, SockMap = 15, CpuMap = 16,
  XskMap = 17, SockHash = 18, CgroupStorage = 19, ReuseportSockArray = 20,
  PerCpuCgroupStorage = 21, Queue = 22, Stack = 23, SkStorage = 24, DevMapHash = 25,
  StructOps = 26, RingBuf = 27, InodeStorage = 28, TaskStorage = 29, BloomFilter = 30,
}

export enum ProgramType {
  Unspec = 0, SocketFilter = 1, Kprobe = 2, SchedCls = 3, SchedAct = 4, Tracepoint = 5,
  Xdp = 6, PerfEvent = 7, CgroupSkb = 8, CgroupSock = 9, LwtIn = 10, LwtOut = 11,
  LwtXmit = 12, SockOps = 13, SkSkb = 14, CgroupDevice = 15, SkMsg = 16,
  RawTracepoint = 17, CgroupSockAddr = 18, LwtSeg6Local = 19, LircMode2 = 20,
  SkReuseport = 21, FlowDissector = 22, CgroupSysctl = 23, RawTracepointWritable = 24,
  CgroupSockopt = 25, Tracing = 26, StructOps = 27, Ext = 28, Lsm = 29, SkLookup = 30,
  Syscall = 31, Netfilter = 32,
}

export enum AttachType {
  CgroupInetIngress = 0, CgroupInetEgress = 1, CgroupInetSockCreate = 2, CgroupSockOps = 3,
  CgroupInet4Bind = 8, CgroupInet6Bind = 9, CgroupInet4Connect = 10, CgroupInet6Connect = 11,
  CgroupInet4PostBind = 12, CgroupInet6PostBind = 13, CgroupUdp4Sendmsg = 14,
  CgroupUdp6Sendmsg = 15, CgroupUdp4Recvmsg = 19, CgroupUdp6Recvmsg = 20,
  CgroupInet4Getpeername = 29, CgroupInet6Getpeername = 30, CgroupInet4Getsockname = 31,
  CgroupInet6Getsockname = 32, CgroupInetSockRelease = 34, Xdp = 37, TcxIngress = 46,
  TcxEgress = 47,
}

/** `bpf()` commands. */
export const enum Cmd {
  MapCreate = 0, MapLookupElem = 1, MapUpdateElem = 2, MapDeleteElem = 3, MapGetNextKey = 4,
  ProgLoad = 5, ObjPin = 6, ObjGet = 7, ProgAttach = 8, ProgDetach = 9, ProgTestRun = 10,
  ProgGetNextId = 11, MapGetNextId = 12, ProgGetFdById = 13, MapGetFdById = 14,
  ObjGetInfoByFd = 15, MapLookupAndDeleteElem = 21, MapFreeze = 22, MapLookupBatch = 24,
  MapLookupAndDeleteBatch = 25, MapUpdateBatch = 26, MapDeleteBatch = 27, LinkCreate = 28,
  LinkUpdate = 29, LinkGetFdById = 30, LinkGetNextId = 31, LinkDetach = 34,
}

/** Map types whose values are one slot per possible CPU. */
export function isPerCpu(type: MapType): boolean {
  return type === MapType.PerCpuHash || type === MapType.PerCpuArray
    || type === MapType.LruPerCpuHash || type === MapType.PerCpuCgroupStorage;
}

/** Name of a map type for messages (`hash`, `lru_hash`, …). */
export function mapTypeName(type: number): string {
  const name = MapType[type];
  return name ? name.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase() : `type ${type}`;
}

/** Name of a program type for messages. */
export function programTypeName(type: number): string {
  const name = ProgramType[type];
  return name ? name.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase() : `type ${type}`;
}
