/**
 * Test support for bench/observe.ts (parts 3 and 4): a UDP sender run inside
 * an endpoint's network namespace,
 *
 *   nsenter --net=NETNS -- node dist/bench/observe-traffic.js DST_IP FLOOD_PORT_BASE FLOOD_PORTS
 *
 * driven by lines on stdin:
 *
 * - `rate N`: send N packets/s (0 pauses), each to the next destination port
 *   of FLOOD_PORT_BASE … + FLOOD_PORTS - 1 (one source port), so every
 *   packet is a flow the datapath traces (a new connection, or one whose last
 *   trace is older than the trace interval); answers `rate N sent TOTAL`;
 * - `probe PORT`: sends one packet to PORT and answers `probe PORT T`, T
 *   being process.hrtime.bigint() (CLOCK_MONOTONIC ns, the clock every
 *   process on the machine shares) taken just before the send;
 * - `stat`: answers `stat sent TOTAL`;
 * - `quit`: answers `quit sent TOTAL` and exits.
 */
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const [dst, baseText, countText] = process.argv.slice(2);
const base = Number(baseText);
const count = Number(countText);
if (!dst || !Number.isInteger(base) || !Number.isInteger(count) || count < 1) {
  process.stderr.write('usage: observe-traffic.js DST_IP FLOOD_PORT_BASE FLOOD_PORTS\n');
  process.exit(2);
}

const sock = createSocket('udp4');
const payload = Buffer.alloc(32, 0x5a);
let rate = 0;
let sent = 0;
let next = 0;
let started = 0n;
let sentAtStart = 0;
const TICK_MS = 2;

const tick = (): void => {
  if (rate === 0) return;
  const due = Math.floor((Number(process.hrtime.bigint() - started) / 1e9) * rate) - (sent - sentAtStart);
  // Never a burst of more than 50 ms worth after a stall.
  const n = Math.min(due, Math.ceil(rate / 20));
  for (let i = 0; i < n; i++) {
    sock.send(payload, base + next, dst);
    next = (next + 1) % count;
    sent++;
  }
};
const timer = setInterval(tick, TICK_MS);

sock.bind(0, () => {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'rate') {
      rate = Math.max(0, Number(arg) || 0);
      started = process.hrtime.bigint();
      sentAtStart = sent;
      process.stdout.write(`rate ${rate} sent ${sent}\n`);
    } else if (cmd === 'probe') {
      const port = Number(arg);
      const t = process.hrtime.bigint();
      sock.send(payload, port, dst);
      process.stdout.write(`probe ${port} ${t}\n`);
    } else if (cmd === 'stat') {
      process.stdout.write(`stat sent ${sent}\n`);
    } else if (cmd === 'quit') {
      process.stdout.write(`quit sent ${sent}\n`, () => process.exit(0));
    }
  });
  rl.on('close', () => {
    clearInterval(timer);
    sock.close();
    process.exit(0);
  });
  process.stdout.write('ready\n');
});
