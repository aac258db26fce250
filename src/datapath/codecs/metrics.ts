/** Codecs of the per-CPU `metrics` array (bpf/include/metrics.h): index `METRICS_INDEX(reason, direction)` → `struct metrics_value`. */
import { BpfUsageError } from '../../bpf/errors.js';
import { struct, u64n, type Codec, type StructCodec } from '../../bpf/codec.js';

/** `METRIC_INGRESS`: towards the endpoint (to_endpoint). */
export const METRIC_INGRESS = 1;
/** `METRIC_EGRESS`: leaving the endpoint (from_endpoint). */
export const METRIC_EGRESS = 2;
/** `METRIC_EVENT_LOST`: events that did not fit in the ring buffer, per reason. */
export const METRIC_EVENT_LOST = 3;
/** Entries of the `metrics` array (`METRICS_MAX`). */
export const METRICS_MAX = 1024;

export interface MetricsKey {
  /** 0 (forwarded) or a drop reason (< 256). */
  reason: number;
  /** `METRIC_*`. */
  direction: number;
}

/** The array index of a (reason, direction) pair, as `METRICS_INDEX()` computes it. */
export function metricsIndex(k: MetricsKey): number {
  if (!Number.isInteger(k.reason) || k.reason < 0 || k.reason > 255) throw new BpfUsageError(`metrics reason must be 0..255, got ${k.reason}`);
  if (!Number.isInteger(k.direction) || k.direction < 0 || k.direction > 3) throw new BpfUsageError(`metrics direction must be 0..3, got ${k.direction}`);
  return (k.direction << 8) | k.reason;
}

/** The `metrics` array's key: a u32 index, read and written as the (reason, direction) pair it stands for. */
export const metricsKey: Codec<MetricsKey> = {
  size: 4,
  encode(v, buf, offset = 0) {
    buf.writeUInt32LE(metricsIndex(v), offset);
  },
  decode(buf, offset = 0) {
    const i = buf.readUInt32LE(offset);
    return { reason: i & 0xff, direction: (i >> 8) & 3 };
  },
};

export interface MetricsValue {
  packets: number;
  bytes: number;
}

export const metricsValue: StructCodec<MetricsValue> = struct<MetricsValue>('metrics_value', 16, {
  packets: { offset: 0, codec: u64n },
  bytes: { offset: 8, codec: u64n },
});
