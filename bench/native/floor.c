/* The floor the TypeScript map path is compared against: the same bpf()
 * syscall issued from a C loop, no FFI per call. Built at bench time. */
#include <linux/bpf.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* n lookups of keys 0..keys-1 (u32) in map fd; returns the number that failed. */
long floor_lookup(int fd, int n, unsigned keys)
{
	unsigned key = 0;
	unsigned char value[64];
	union bpf_attr attr;
	long failed = 0;

	memset(&attr, 0, sizeof(attr));
	attr.map_fd = fd;
	attr.key = (unsigned long)&key;
	attr.value = (unsigned long)value;
	for (int i = 0; i < n; i++) {
		key = (unsigned)i % keys;
		if (syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &attr, 32) < 0)
			failed++;
	}
	return failed;
}

/* An empty function: the FFI's own per-call cost. */
int floor_nop(int x)
{
	return x;
}

/* One BPF_MAP_UPDATE_BATCH of count pre-encoded entries; returns entries written or -1. */
long floor_update_batch(int fd, const void *keys, const void *values, unsigned count)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.batch.map_fd = fd;
	attr.batch.keys = (unsigned long)keys;
	attr.batch.values = (unsigned long)values;
	attr.batch.count = count;
	if (syscall(SYS_bpf, BPF_MAP_UPDATE_BATCH, &attr, sizeof(attr.batch)) < 0)
		return -1;
	return attr.batch.count;
}
