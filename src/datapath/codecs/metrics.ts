/** Codecs of `struct metrics_key` and `struct metrics_value` (bpf/include/metrics.h): the per-CPU `metrics` map. */
import { struct, u16, u64n, u8, type StructCodec } from '../../bpf/codec.js';

/** `METRIC_INGRESS`: towards the endpoint (to_endpoint). */
export const METRIC_INGRESS = 1;
/** `METRIC_EGRESS`: leaving the endpoint (from_endpoint). */
export const METRIC_EGRESS = 2;
/** `METRIC_EVENT_LOST`: events that did not fit in the ring buffer, per reason. */
export const METRIC_EVENT_LOST = 3;
/** Entries of the `metrics` map (`METRICS_MAX`). */
export const METRICS_MAX = 1024;

export interface MetricsKey {
  /** 0 (forwarded) or a drop reason. */
  reason: number;
  /** `METRIC_*`. */
  direction: number;
}

export const metricsKey: StructCodec<MetricsKey> = struct<MetricsKey>('metrics_key', 4, {
  reason: { offset: 0, codec: u16 },
  direction: { offset: 2, codec: u8 },
});

export interface MetricsValue {
  packets: number;
  bytes: number;
}

export const metricsValue: StructCodec<MetricsValue> = struct<MetricsValue>('metrics_value', 16, {
  packets: { offset: 0, codec: u64n },
  bytes: { offset: 8, codec: u64n },
});
