/**
 * The traffic tool of the services benchmark (bench/services.ts): one small C
 * program compiled at bench time (as bench/native.ts and bench/policy-tool.ts
 * do, with whichever of cc, gcc, clang works), run inside the benchmark's own
 * network namespaces through the helpers of bench/policy-tool.ts.
 *
 *   serve PORT[,PORT…]   TCP server on 0.0.0.0 at every PORT (epoll, one thread):
 *                        accepts, and answers every request (any read) with a
 *                        64-byte response whose first 4 bytes are the local address
 *                        the connection arrived at and bytes 4–5 its local port
 *                        (network order), so the client sees which backend answered;
 *                        closes when the client does (the client resets)
 *   crr                  a connect/request/response/close loop, commands on stdin, one
 *                        per line: "MS ADDR PORT WANT_PORT" runs connections to
 *                        ADDR:PORT for MS ms (after 20 untimed ones) and prints one
 *                        JSON line {"n","ns","errors","p50","p90","p99","mean",
 *                        "backends","wrongPort"}: connections completed, the slice's
 *                        wall time, failed attempts, latency percentiles in ns of
 *                        connect + 32-byte request + 64-byte response (the close is
 *                        not in the latency but is in the rate), distinct backend
 *                        addresses that answered, and answers from a port other than
 *                        WANT_PORT (0: any). Each connection is closed with an RST
 *                        (SO_LINGER 0), so neither side keeps TIME_WAIT state and
 *                        ephemeral ports never run out.
 */
import { compileCTool, type Tool } from './policy-tool.js';

const SOURCE = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQ 32
#define RESP 64
#define MAX_SAMPLES (1 << 22)

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

static int serve(char *ports)
{
	int ep = epoll_create1(0), one = 1;
	int listeners[64], nl = 0;
	struct epoll_event ev, evs[256];
	if (ep < 0)
		die("epoll_create1");
	for (char *p = strtok(ports, ","); p && nl < 64; p = strtok(NULL, ",")) {
		struct sockaddr_in a;
		int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (l < 0)
			die("socket");
		setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_port = htons((uint16_t)atoi(p));
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("bind");
		if (listen(l, 4096) < 0)
			die("listen");
		ev.events = EPOLLIN;
		ev.data.u64 = ((uint64_t)1 << 32) | (uint32_t)l;
		epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
		listeners[nl++] = l;
	}
	(void)listeners;
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			int fd = (int)(uint32_t)evs[i].data.u64;
			if (evs[i].data.u64 >> 32) {
				for (;;) {
					int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK);
					if (c < 0)
						break;
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.events = EPOLLIN | EPOLLRDHUP;
					ev.data.u64 = (uint32_t)c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			char buf[512];
			ssize_t r = recv(fd, buf, sizeof(buf), 0);
			if (r > 0) {
				char resp[RESP];
				struct sockaddr_in me;
				socklen_t len = sizeof(me);
				memset(resp, 'r', sizeof(resp));
				if (getsockname(fd, (struct sockaddr *)&me, &len) == 0) {
					memcpy(resp, &me.sin_addr, 4);
					memcpy(resp + 4, &me.sin_port, 2);
				}
				if (send(fd, resp, sizeof(resp), MSG_NOSIGNAL) != sizeof(resp)) {
					close(fd);
				}
				continue;
			}
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			close(fd); /* removed from the epoll set with it */
		}
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t *samples;

/* One connection: 0 and its latency on success, -1 on failure. */
static int one_conn(const struct sockaddr_in *a, uint64_t *lat, uint8_t *who, uint16_t *port)
{
	static const struct linger lg = { 1, 0 };
	char req[REQ], resp[RESP];
	int s, one = 1, got = 0, ok = -1;
	uint64_t t0 = now_ns();
	memset(req, 'q', sizeof(req));
	s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		return -1;
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s, (const struct sockaddr *)a, sizeof(*a)) == 0 && send(s, req, sizeof(req), MSG_NOSIGNAL) == sizeof(req)) {
		while (got < RESP) {
			ssize_t r = recv(s, resp + got, RESP - got, 0);
			if (r <= 0)
				break;
			got += (int)r;
		}
		if (got == RESP) {
			*lat = now_ns() - t0;
			*who = (uint8_t)resp[3];
			memcpy(port, resp + 4, 2);
			*port = ntohs(*port);
			ok = 0;
		}
	}
	setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(s);
	return ok;
}

static int crr(void)
{
	char line[256];
	samples = malloc(sizeof(uint64_t) * MAX_SAMPLES);
	if (!samples)
		die("malloc");
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		char ip[64];
		unsigned long long ms;
		int port, want;
		struct sockaddr_in a;
		uint64_t n = 0, errors = 0, wrong = 0, sum = 0, lat, t0, t, end;
		uint8_t who, seen[256];
		uint16_t got_port;
		int backends = 0;
		if (sscanf(line, "%llu %63s %d %d", &ms, ip, &port, &want) != 4) {
			fprintf(stderr, "bad command: %s", line);
			return 2;
		}
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
			fprintf(stderr, "bad address %s\n", ip);
			return 2;
		}
		memset(seen, 0, sizeof(seen));
		for (int i = 0; i < 20; i++)
			one_conn(&a, &lat, &who, &got_port);
		t0 = now_ns();
		end = t0 + ms * 1000000ull;
		do {
			if (one_conn(&a, &lat, &who, &got_port) == 0) {
				if (n < MAX_SAMPLES)
					samples[n] = lat;
				n++;
				sum += lat;
				if (!seen[who]) {
					seen[who] = 1;
					backends++;
				}
				if (want && got_port != want)
					wrong++;
			} else if (++errors > 1000) {
				break;
			}
			t = now_ns();
		} while (t < end);
		t = now_ns();
		{
			uint64_t k = n < MAX_SAMPLES ? n : MAX_SAMPLES;
			uint64_t p50 = 0, p90 = 0, p99 = 0;
			if (k > 0) {
				qsort(samples, k, sizeof(uint64_t), cmp_u64);
				p50 = samples[k / 2];
				p90 = samples[(k * 90) / 100];
				p99 = samples[(k * 99) / 100];
			}
			printf("{\"n\":%llu,\"ns\":%llu,\"errors\":%llu,\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"mean\":%llu,\"backends\":%d,\"wrongPort\":%llu}\n",
			       (unsigned long long)n, (unsigned long long)(t - t0), (unsigned long long)errors,
			       (unsigned long long)p50, (unsigned long long)p90, (unsigned long long)p99,
			       (unsigned long long)(n ? sum / n : 0), backends, (unsigned long long)wrong);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "serve") == 0)
		return serve(argv[2]);
	if (argc >= 2 && strcmp(argv[1], "crr") == 0)
		return crr();
	fprintf(stderr, "usage: see bench/services-tool.ts\n");
	return 2;
}
`;

/** The compiled tool: its path, and a function that removes it. */
export type ServicesTool = Tool;

/** One slice of the `crr` mode, as printed. */
export interface CrrResult {
  n: number;
  ns: number;
  errors: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  backends: number;
  wrongPort: number;
}

/** Compiles the tool into a temporary directory (throws when no C compiler works). */
export function buildServicesTool(): ServicesTool {
  return compileCTool('services-tool', SOURCE, 'the services traffic tool');
}
