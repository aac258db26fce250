/** Attaching programs: BPF links (XDP, tcx, cgroup) and classic TC filters. */
export {
  Link, LinkType, linkCreate, linkInfo, linkTypeName, attachTypeName,
  BPF_F_AFTER, BPF_F_BEFORE, BPF_F_ID, BPF_F_LINK, BPF_F_REPLACE,
  type LinkCreateExtra, type LinkInfo,
} from './link.js';
export { attachXdp, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, type XdpAttachOptions, type XdpMode } from './xdp.js';
export { attachTcx, supportsTcx, tcxAttachType, TcxLink, type TcDirection, type TcxOrder } from './tcx.js';
export { attachClsact, attachTc, TcFilter, type ClsactOptions, type TcAttachment, type TcAttachOptions } from './tc.js';
export { attachCgroup, sockAddrAttachType, type SockAddrHook } from './cgroup.js';
