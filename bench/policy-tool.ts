/**
 * Traffic tools for the policy benchmark (bench/policy.ts): one small C
 * program, compiled at bench time with the C compiler the set-up installs,
 * and helpers to run it (and other commands) inside network namespaces the
 * benchmark made, to read a namespace's SNMP counters and to clean up.
 *
 * The program's modes (all addresses must be in the test range 10.199.0.0/16,
 * checked here before anything is spawned):
 *
 *   udp-flood SRC SPORT DST DPORT MS   sendmmsg() bursts of 64 UDP datagrams
 *                                      (18-byte payload: 60-byte frames) for MS ms;
 *                                      prints {"sent":N,"ns":T,"errors":E}
 *   raw-flood SRC DST PROTO MS         the same with raw IP packets of protocol PROTO
 *   flood-loop udp SRC SPORT DST DPORT | flood-loop raw SRC DST PROTO
 *                                      the same socket kept open: floods for MS ms
 *                                      for every line "MS" read on stdin (one JSON line
 *                                      each), so a slice costs no process start
 *   sink udp ADDR PORT | raw ADDR PROTO a bound socket that is never read (its
 *                                      queue fills, then the kernel drops at the
 *                                      socket: no ICMP error goes back)
 *   udp-recv ADDR PORT [echo]          reads with recvmmsg() for ever (echo: answers
 *                                      each batch with 1 byte to its first sender, so
 *                                      the flows are two-way)
 *   rr-server ADDR PORT                TCP echo of 1-byte messages, one connection
 *                                      at a time, for ever
 *   rr-client ADDR PORT MS             TCP_NODELAY ping-pong of 1 byte for MS ms
 *                                      (after 200 untimed); prints {"n":N,"ns":T}
 *   probe ADDR PORT TIMEOUT_MS GAP_US  TCP connect probes for ever, one line per
 *                                      probe: "START_NS OK|FAIL DURATION_NS"
 *                                      (CLOCK_MONOTONIC, the clock of
 *                                      process.hrtime), closed with RST
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { stop } from '../test/helpers/traffic.js';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inNetns } from '../src/netlink/netns.js';
import { CLI, TestAgent, type AgentOptions } from '../test/helpers/agent.js';
import { Cleanup as CleanupBase, type Cleanup, type CleanupFn } from '../test/helpers/netns.js';
import { checkTestAddress } from '../test/helpers/traffic.js';

const SOURCE = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

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

static struct sockaddr_in addr_of(const char *ip, int port)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", ip);
		exit(2);
	}
	return a;
}

static int flood(int s, uint64_t ms)
{
	static char payload[18];
	struct mmsghdr msgs[BATCH];
	struct iovec iov = { payload, sizeof(payload) };
	uint64_t sent = 0, errors = 0, t0, end, t;
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	t0 = now_ns();
	end = t0 + ms * 1000000ull;
	do {
		int r = sendmmsg(s, msgs, BATCH, 0);
		if (r < 0)
			errors++;
		else
			sent += (uint64_t)r;
		t = now_ns();
	} while (t < end);
	printf("{\"sent\":%llu,\"ns\":%llu,\"errors\":%llu}\n", (unsigned long long)sent,
	       (unsigned long long)(t - t0), (unsigned long long)errors);
	fflush(stdout);
	return 0;
}

static int flood_socket(int raw, const char *src, int sport, const char *dst, int dport_or_proto)
{
	struct sockaddr_in a = addr_of(src, raw ? 0 : sport), b = addr_of(dst, raw ? 0 : dport_or_proto);
	int s = raw ? socket(AF_INET, SOCK_RAW, dport_or_proto) : socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		die("socket");
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (connect(s, (struct sockaddr *)&b, sizeof(b)) < 0)
		die("connect");
	return s;
}

static int flood_loop(int s)
{
	char line[64];
	while (fgets(line, sizeof(line), stdin))
		flood(s, strtoull(line, NULL, 10));
	return 0;
}

static int tcp_socket(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (s < 0)
		die("socket");
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return s;
}

static int rr_server(const char *ip, int port)
{
	struct sockaddr_in a = addr_of(ip, port);
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (l < 0)
		die("socket");
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(l, 1024) < 0)
		die("listen");
	for (;;) {
		char b;
		int c = accept(l, NULL, NULL);
		if (c < 0)
			continue;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		while (recv(c, &b, 1, 0) == 1)
			if (send(c, &b, 1, 0) != 1)
				break;
		close(c);
	}
}

static int rr_client(const char *ip, int port, uint64_t ms)
{
	struct sockaddr_in a = addr_of(ip, port);
	int s = tcp_socket();
	char b = 'x';
	uint64_t n = 0, t0, end, t;
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	for (int i = 0; i < 200; i++)
		if (send(s, &b, 1, 0) != 1 || recv(s, &b, 1, 0) != 1)
			die("warm-up exchange");
	t0 = now_ns();
	end = t0 + ms * 1000000ull;
	do {
		if (send(s, &b, 1, 0) != 1 || recv(s, &b, 1, 0) != 1)
			die("exchange");
		n++;
		t = now_ns();
	} while (t < end);
	printf("{\"n\":%llu,\"ns\":%llu}\n", (unsigned long long)n, (unsigned long long)(t - t0));
	return 0;
}

static int probe(const char *ip, int port, int timeout_ms, int gap_us)
{
	struct sockaddr_in a = addr_of(ip, port);
	struct linger lg = { 1, 0 };
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		uint64_t t0 = now_ns(), t1;
		int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ok = 0, err = 0;
		socklen_t len = sizeof(err);
		if (s < 0)
			die("socket");
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0) {
			ok = 1;
		} else if (errno == EINPROGRESS) {
			struct pollfd p = { s, POLLOUT, 0 };
			if (poll(&p, 1, timeout_ms) == 1 && getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
				ok = 1;
		}
		t1 = now_ns();
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(s);
		printf("%llu %s %llu\n", (unsigned long long)t0, ok ? "OK" : "FAIL", (unsigned long long)(t1 - t0));
		if (gap_us > 0)
			usleep((useconds_t)gap_us);
	}
}

int main(int argc, char **argv)
{
	if (argc >= 7 && strcmp(argv[1], "udp-flood") == 0)
		return flood(flood_socket(0, argv[2], atoi(argv[3]), argv[4], atoi(argv[5])), strtoull(argv[6], NULL, 10));
	if (argc >= 6 && strcmp(argv[1], "raw-flood") == 0)
		return flood(flood_socket(1, argv[2], 0, argv[3], atoi(argv[4])), strtoull(argv[5], NULL, 10));
	if (argc >= 7 && strcmp(argv[1], "flood-loop") == 0 && strcmp(argv[2], "udp") == 0)
		return flood_loop(flood_socket(0, argv[3], atoi(argv[4]), argv[5], atoi(argv[6])));
	if (argc >= 6 && strcmp(argv[1], "flood-loop") == 0 && strcmp(argv[2], "raw") == 0)
		return flood_loop(flood_socket(1, argv[3], 0, argv[4], atoi(argv[5])));
	if (argc >= 5 && strcmp(argv[1], "sink") == 0) {
		int raw = strcmp(argv[2], "raw") == 0, small = 1;
		struct sockaddr_in a = addr_of(argv[3], raw ? 0 : atoi(argv[4]));
		int s = raw ? socket(AF_INET, SOCK_RAW, atoi(argv[4])) : socket(AF_INET, SOCK_DGRAM, 0);
		if (s < 0)
			die("socket");
		setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("bind");
		for (;;)
			pause();
	}
	if (argc >= 4 && strcmp(argv[1], "udp-recv") == 0) {
		static char bufs[BATCH][64];
		struct mmsghdr msgs[BATCH];
		struct iovec iov[BATCH];
		struct sockaddr_in from[BATCH];
		struct sockaddr_in a = addr_of(argv[2], atoi(argv[3]));
		int s = socket(AF_INET, SOCK_DGRAM, 0), big = 4 << 20, echo = argc >= 5 && strcmp(argv[4], "echo") == 0;
		if (s < 0)
			die("socket");
		setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
		if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("bind");
		memset(msgs, 0, sizeof(msgs));
		for (int i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = sizeof(bufs[i]);
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &from[i];
			msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
		}
		for (;;) {
			int r = recvmmsg(s, msgs, BATCH, 0, NULL);
			/* echo: one 1-byte answer per batch, to the batch's first sender */
			if (r > 0 && echo)
				sendto(s, "r", 1, MSG_DONTWAIT, (struct sockaddr *)&from[0], sizeof(from[0]));
			for (int i = 0; i < BATCH; i++)
				msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
		}
	}
	if (argc >= 4 && strcmp(argv[1], "rr-server") == 0)
		return rr_server(argv[2], atoi(argv[3]));
	if (argc >= 5 && strcmp(argv[1], "rr-client") == 0)
		return rr_client(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10));
	if (argc >= 6 && strcmp(argv[1], "probe") == 0)
		return probe(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	fprintf(stderr, "usage: see bench/policy-tool.ts\n");
	return 2;
}
`;

/** Set once the run is interrupted (SIGINT/SIGTERM): nothing new may be made from then on. */
let abortedFlag = false;

export function markAborted(): void {
  abortedFlag = true;
}

export function isAborted(): boolean {
  return abortedFlag;
}

/** The error of an interrupted run. */
export class AbortedError extends Error {
  constructor() {
    super('bench interrupted');
  }
}

/**
 * Removal of a TestAgent, serialised: a call waits for one in progress and
 * then removes again (TestAgent.remove run twice at once would run the
 * `--cleanup` while the first call still waits for the agent to exit).
 */
export function agentRemover(agent: TestAgent): () => Promise<void> {
  let chain: Promise<void> = Promise.resolve();
  return () => {
    const next = chain.then(() => removeAgent(agent));
    chain = next.catch(() => undefined);
    return next;
  };
}

/**
 * As TestAgent.remove(), but `waggle agent --cleanup` runs in its own session
 * (setsid), so a Ctrl-C at the terminal, which reaches every process of the
 * benchmark's process group, does not cut it short halfway through.
 */
async function removeAgent(agent: TestAgent): Promise<void> {
  await agent.stop();
  const r = spawnSync('setsid', ['-w', process.execPath, CLI, 'agent', '--cleanup', ...agent.flags], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`waggle agent --cleanup failed (${r.status ?? r.signal}): ${r.stderr}`);
  agent.cgroup?.remove();
  rmSync(agent.dir, { recursive: true, force: true });
}

/**
 * Makes a TestAgent, registers its removal with `cleanup` and starts it.
 * When the run is interrupted while it starts (the cleanup may then run
 * before the process exists), it is removed again once started, and the
 * call throws.
 */
export async function startAgent(opts: AgentOptions, cleanup: Cleanup, what: string): Promise<TestAgent> {
  const agent = new TestAgent(opts);
  const remove = agentRemover(agent);
  cleanup.add(remove, what);
  await agent.start();
  if (abortedFlag) {
    await remove().catch(() => undefined);
    throw new AbortedError();
  }
  return agent;
}

/** The compiled tool: its path, and a function that removes it. */
export interface Tool {
  path: string;
  remove(): void;
}

/** Compiles C `source` as `name` into a temporary directory (throws naming `what` when no C compiler works). */
export function compileCTool(name: string, source: string, what: string): Tool {
  const dir = mkdtempSync(join(tmpdir(), `waggle-bench-${name}-`));
  const src = join(dir, `${name}.c`);
  const bin = join(dir, name);
  writeFileSync(src, source);
  const problems: string[] = [];
  for (const cc of ['cc', 'gcc', 'clang']) {
    try {
      execFileSync(cc, ['-O2', '-Wall', '-o', bin, src], { stdio: ['ignore', 'pipe', 'pipe'] });
      return { path: bin, remove: () => rmSync(dir, { recursive: true, force: true }) };
    } catch (err) {
      problems.push(`${cc}: ${((err as { stderr?: Buffer }).stderr?.toString() ?? (err as Error).message).trim().split('\n')[0]}`);
    }
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`no C compiler could build ${what} (${problems.join('; ')})`);
}

/** Compiles the traffic tool into a temporary directory (throws when no C compiler works). */
export function buildTool(): Tool {
  return compileCTool('policy-tool', SOURCE, 'the traffic tool');
}

/** Refuses addresses outside the test range before anything is sent there. */
export function checkAddrs(...addrs: string[]): void {
  for (const a of addrs) checkTestAddress(a);
}

/** Every child process spawned here that may still run (killed by {@link killChildren}). */
const children = new Set<ChildProcess>();

/**
 * Spawns `cmd` inside the named namespace `ns` (`ip netns exec`, which execs
 * in place: the child's PID is the command's), optionally pinned to `cpu`.
 */
export function spawnIn(ns: string, cmd: string[], opts: { cpu?: number; stdout?: number | 'pipe' | 'ignore'; stdin?: 'pipe' | 'ignore' } = {}): ChildProcess {
  const pin = opts.cpu !== undefined ? ['taskset', '-c', String(opts.cpu)] : [];
  const child = spawn('ip', ['netns', 'exec', ns, ...pin, ...cmd], { stdio: [opts.stdin ?? 'ignore', opts.stdout ?? 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', () => children.delete(child));
  return child;
}

/** Runs `cmd` in `ns` to completion (killed after `timeoutMs`); resolves to stdout, rejects on failure. */
export function runIn(ns: string, cmd: string[], opts: { cpu?: number; timeoutMs: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnIn(ns, cmd, opts);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.once('error', (err) => { clearTimeout(timer); reject(err); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${cmd.join(' ')} in ${ns} exited ${code ?? signal}: ${stderr.trim() || stdout.trim()}`));
    });
  });
}

/** Kills `child` (by its PID) if it still runs and waits for it, at most 5 s (the tests' helper). */
export const stopChild = stop;

/** Kills every child spawned through {@link spawnIn} that still runs. */
export async function killChildren(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c)));
}

/** Waits until a long-running child has been up for `ms` without exiting (it failed early otherwise). */
export async function settle(child: ChildProcess, what: string, ms = 150): Promise<void> {
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  await new Promise((r) => setTimeout(r, ms));
  if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited ${child.exitCode ?? child.signalCode}: ${stderr.trim()}`);
}

/** `/proc/net/snmp` of the namespace at `nsPath` as { 'Ip.InReceives': n, 'Udp.InDatagrams': n, … }. */
export function snmp(nsPath: string): Record<string, number> {
  const text = inNetns(nsPath, () => readFileSync('/proc/thread-self/net/snmp', 'utf8'));
  const out: Record<string, number> = {};
  const lines = text.split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const head = (lines[i] as string).split(/\s+/);
    const vals = (lines[i + 1] as string).split(/\s+/);
    const group = (head[0] as string).replace(/:$/, '');
    for (let j = 1; j < head.length; j++) out[`${group}.${head[j]}`] = Number(vals[j]);
  }
  return out;
}

/** A long-running process that answers each line written to its stdin with one line on stdout. */
export class LineProcess {
  private buf = '';
  private waiting: { resolve: (line: string) => void; reject: (err: Error) => void } | undefined;
  private stderr = '';

  constructor(readonly child: ChildProcess, readonly what: string) {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      this.buf += d;
      const nl = this.buf.indexOf('\n');
      if (nl >= 0 && this.waiting) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiting;
        this.waiting = undefined;
        w.resolve(line);
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { this.stderr += d; });
    child.once('exit', (code, signal) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.reject(new Error(`${what} exited ${code ?? signal}: ${this.stderr.trim()}`));
    });
  }

  /** Writes `line` and resolves to the answer (rejects after `timeoutMs` or when the process exits). */
  ask(line: string, timeoutMs: number): Promise<string> {
    if (this.waiting) return Promise.reject(new Error(`${this.what}: one request at a time`));
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.reject(new Error(`${this.what} is not running: ${this.stderr.trim()}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`${this.what}: no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting = {
        resolve: (l) => { clearTimeout(timer); resolve(l); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this.child.stdin?.write(`${line}\n`);
    });
  }
}

/** CPU time (ns) task `pid` has run so far: the first field of /proc/PID/schedstat (sum_exec_runtime). */
export function taskRuntimeNs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
}

/** PID of the kernel thread `ksoftirqd/CPU`. */
export function ksoftirqdPid(cpu: number): number {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() === `ksoftirqd/${cpu}`) return Number(d);
    } catch {
      // gone
    }
  }
  throw new Error(`no ksoftirqd/${cpu} thread`);
}

/**
 * A {@link Cleanup} that refuses new steps once the run is interrupted: the
 * step runs at once (what was just made goes again) and the caller gets an
 * error, so an interrupted run stops instead of making more.
 */
export class BenchCleanup extends CleanupBase {
  override add(fn: CleanupFn, label?: string): void {
    if (isAborted()) {
      void Promise.resolve().then(fn).catch(() => undefined);
      throw new AbortedError();
    }
    super.add(fn, label);
  }
}

/**
 * A part's own cleanup, also registered with the run's: whichever runs it
 * first runs it, the other waits for that (never two runners at once).
 */
export function scope(global: BenchCleanup, name: string): { part: BenchCleanup; done: () => Promise<void> } {
  const part = new BenchCleanup();
  let running: Promise<unknown> | undefined;
  const done = async (): Promise<void> => { await (running ??= part.run()); };
  global.add(done, `${name} cleanup`);
  return { part, done };
}

export function checkAborted(): void {
  if (isAborted()) throw new AbortedError();
}

/**
 * Runs a bench's `body` so that what it made goes whatever happens: `cleanup`
 * runs (after the children are killed) when the body ends, and SIGINT,
 * SIGTERM or a closed output pipe (`| head`: EPIPE) stop the children at
 * once, remove everything and exit with 130 / 143 / 141, at most 2 minutes
 * after the signal. `name` names the bench in the message.
 */
export async function runInterruptible<T>(name: string, cleanup: BenchCleanup, body: () => Promise<T>): Promise<T> {
  let cleaning: Promise<unknown> | undefined;
  const cleanAll = (): Promise<unknown> => (cleaning ??= killChildren().then(() => cleanup.run()));
  let bodyDone: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => { bodyDone = resolve; });
  const onSignal = (sig: NodeJS.Signals): void => {
    if (isAborted()) return;
    markAborted();
    if (sig !== 'SIGPIPE') process.stderr.write(`${name} bench: ${sig}, cleaning up\n`);
    // Kill the children at once (a Linux rule load can run for minutes), then remove everything.
    void killChildren();
    const capped = new Promise((resolve) => setTimeout(resolve, 120_000).unref());
    void Promise.race([Promise.all([cleanAll(), finished]), capped]).finally(() => process.exit(sig === 'SIGINT' ? 130 : sig === 'SIGPIPE' ? 141 : 143));
  };
  const onBrokenPipe = (err: NodeJS.ErrnoException): void => { if (err.code === 'EPIPE') onSignal('SIGPIPE'); };
  process.stdout.on('error', onBrokenPipe);
  process.stderr.on('error', onBrokenPipe);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await body();
  } finally {
    await cleanAll();
    // A signal that came during a synchronous step (e.g. spawnSync) is delivered now, to the handler, not to the default action.
    await new Promise((resolve) => setImmediate(resolve));
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.stdout.off('error', onBrokenPipe);
    process.stderr.off('error', onBrokenPipe);
    bodyDone();
  }
}

export const r1 = (x: number): number => Number(x.toFixed(1));
export const r3 = (x: number): number => Number(x.toFixed(3));
export const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');
