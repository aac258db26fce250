// SPDX-License-Identifier: GPL-2.0
/* Test object for the service load-balancing maps (bpf/include/lb.h) and the
 * datapath's backend selection (bpf/lib/lb_select.h). It declares the maps
 * (so the agent's map writer can be tested on them and the codecs checked
 * against their BTF) and one XDP program that runs lb_lookup_service +
 * lb_select on a request laid out in the packet, not on a real packet:
 *
 *   0  addr[16]    frontend address (network order; IPv4 in the first 4)
 *   16 client[16]  client address (for session affinity)
 *   32 hash   u32  the connection's hash (Maglev index = hash % maglev_size)
 *   36 port   be16 frontend port
 *   38 proto  u8
 *   39 family u8   AF_INET / AF_INET6
 *   40 status u32  out: LB_TEST_*
 *   44 backend_id u32  out: the chosen backend
 *   48 backend port be16 out
 *   50 backend flags u8 out
 *
 * Every chosen backend is also counted in `lb_test_hits` (backend ID → runs),
 * so one BPF_PROG_TEST_RUN with `repeat` measures the spread of the random
 * choice. The program returns XDP_PASS. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb.h"
#include "lb_select.h"

#define LB_TEST_OK 0
#define LB_TEST_NO_SERVICE 1
#define LB_TEST_NO_BACKEND 2

struct lb_test_req {
	__u8 addr[16];
	__u8 client[16];
	__u32 hash;
	__u16 port;
	__u8 proto;
	__u8 family;
	__u32 status;
	__u32 backend_id;
	__u16 backend_port;
	__u8 backend_flags;
	__u8 pad[13];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} lb_test_hits SEC(".maps");

SEC("xdp")
int lb_test_select(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct lb_test_req *req = data;
	struct lb_service_key key;
	struct lb_service *svc;
	struct lb_backend *be;
	__u8 addr[16], client[16];
	__u32 id = 0;
	__u64 one = 1, *hits;

	if ((void *)(req + 1) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(addr, req->addr, 16);
	__builtin_memcpy(client, req->client, 16);
	req->backend_id = 0;
	svc = lb_lookup_service(&key, req->family, addr, req->port, req->proto);
	if (!svc) {
		req->status = LB_TEST_NO_SERVICE;
		return XDP_PASS;
	}
	be = lb_select(&key, svc, client, req->family, req->hash, &id);
	if (!be) {
		req->status = LB_TEST_NO_BACKEND;
		return XDP_PASS;
	}
	req->status = LB_TEST_OK;
	req->backend_id = id;
	req->backend_port = be->port;
	req->backend_flags = be->flags;
	hits = bpf_map_lookup_elem(&lb_test_hits, &id);
	if (hits)
		__sync_fetch_and_add(hits, 1);
	else
		bpf_map_update_elem(&lb_test_hits, &id, &one, BPF_NOEXIST);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
