/**
 * Endpoint create + delete through the real agent: a `waggle agent` process
 * (TestAgent: temp state, bpffs and socket) driven over its unix-socket API
 * exactly as the CLI or a CNI plugin would, one request at a time.
 *
 * - creates/s and deletes/s: rounds of ROUND_SIZE creates then ROUND_SIZE
 *   deletes, alternating (so both see the same machine speed), median over
 *   the rounds after WARMUP_ROUNDS untimed ones;
 * - the time to create BULK endpoints in a row (goal ≤ 5 s), the agent's RSS
 *   (VmRSS from /proc/PID/status) with them (goal ≤ 150 MiB), and the time
 *   to delete them again.
 *
 * Everything is removed at the end, even on error (agent.remove() runs
 * `waggle agent --cleanup`). Needs root.
 */
import { readFileSync } from 'node:fs';
import { apiOk, apiRequest, TestAgent } from '../test/helpers/agent.js';
import { median, printReport, type RateSummary } from './lib.js';

const ROUND_SIZE = 20;
const ROUNDS = 7;
const WARMUP_ROUNDS = 1;
const BULK = 100;
const GOAL_BULK_SECONDS = 5;
const GOAL_RSS_MIB = 150;




/** VmRSS (and VmHWM) of `pid` in MiB. */
function rssMiB(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(m[1]) / 1024;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

function summarise(samples: number[]): RateSummary {
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples };
}

export async function run(opts: { json: boolean }): Promise<Record<string, number>> {
  const agent = new TestAgent({ nodeName: `bench-${process.pid}` });
  const sock = agent.apiSocket;
  let seq = 0;
  const live = new Set<string>();
  const create = async (): Promise<string> => {
    const name = `bench-${process.pid}-${seq++}`;
    await apiOk(sock, 'POST', '/v1/endpoints', { name, namespace: 'bench', labels: { app: 'bench' } });
    live.add(name);
    return name;
  };
  const remove = async (name: string): Promise<void> => {
    await apiOk(sock, 'DELETE', `/v1/endpoints/${encodeURIComponent(name)}`);
    live.delete(name);
  };
  /** Runs `n` operations one after another; returns operations per second. */
  const timed = async (n: number, op: (i: number) => Promise<unknown>): Promise<number> => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await op(i);
    return (n * 1e9) / Number(process.hrtime.bigint() - t0);
  };

  try {
    await agent.start();
    const pid = agent.pid;
    if (pid === undefined) throw new Error('agent has no PID');
    const rssIdle = rssMiB(pid);

    // Interleaved rounds: ROUND_SIZE creates, then deleting those ROUND_SIZE.
    const createRates: number[] = [];
    const deleteRates: number[] = [];
    for (let round = -WARMUP_ROUNDS; round < ROUNDS; round++) {
      const names: string[] = [];
      const c = await timed(ROUND_SIZE, async () => { names.push(await create()); });
      const d = await timed(ROUND_SIZE, (i) => remove(names[i] as string));
      if (round >= 0) { createRates.push(c); deleteRates.push(d); }
    }

    // BULK endpoints in a row, the agent's memory with them, and deleting them.
    const bulk: string[] = [];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < BULK; i++) bulk.push(await create());
    const bulkCreateSec = Number(process.hrtime.bigint() - t0) / 1e9;
    const listed = await apiOk(sock, 'GET', '/v1/endpoints') as unknown[];
    if (listed.length !== BULK) throw new Error(`agent lists ${listed.length} endpoints, expected ${BULK}`);
    const rssBulk = rssMiB(pid);
    const t1 = process.hrtime.bigint();
    for (const name of bulk) await remove(name);
    const bulkDeleteSec = Number(process.hrtime.bigint() - t1) / 1e9;
    const rssAfter = rssMiB(pid);

    const creates = summarise(createRates);
    const deletes = summarise(deleteRates);
    const figures: Record<string, number> = {
      createsPerSec: Number(creates.median.toFixed(1)),
      deletesPerSec: Number(deletes.median.toFixed(1)),
      createMsMedian: Number((1000 / creates.median).toFixed(2)),
      deleteMsMedian: Number((1000 / deletes.median).toFixed(2)),
      [`create${BULK}Seconds`]: Number(bulkCreateSec.toFixed(3)),
      [`delete${BULK}Seconds`]: Number(bulkDeleteSec.toFixed(3)),
      [`create${BULK}FromMedianSeconds`]: Number((BULK / creates.median).toFixed(3)),
      rssIdleMiB: Number(rssIdle.rss.toFixed(1)),
      [`rss${BULK}EndpointsMiB`]: Number(rssBulk.rss.toFixed(1)),
      rssAfterDeleteMiB: Number(rssAfter.rss.toFixed(1)),
      rssPeakMiB: Number(rssAfter.hwm.toFixed(1)),
    };
    if (!opts.json) {
      printReport(`endpoint create / delete through the agent API, rounds of ${ROUND_SIZE} + ${ROUND_SIZE}, one request at a time`,
        { create: creates, delete: deletes }, {}, 'endpoints');
      process.stdout.write(
        `  per endpoint (median): create ${figures.createMsMedian} ms, delete ${figures.deleteMsMedian} ms\n`
        + `  ${BULK} creates in a row   ${bulkCreateSec.toFixed(2)} s   (goal <= ${GOAL_BULK_SECONDS} s: ${bulkCreateSec <= GOAL_BULK_SECONDS ? 'met' : 'MISSED'}; `
        + `${BULK} x the median create: ${(BULK / creates.median).toFixed(2)} s)\n`
        + `  ${BULK} deletes in a row   ${bulkDeleteSec.toFixed(2)} s\n`
        + `  agent RSS with ${BULK}      ${rssBulk.rss.toFixed(1)} MiB   (goal <= ${GOAL_RSS_MIB} MiB: ${rssBulk.rss <= GOAL_RSS_MIB ? 'met' : 'MISSED'}; `
        + `idle ${rssIdle.rss.toFixed(1)} MiB, after deleting ${rssAfter.rss.toFixed(1)} MiB, peak ${rssAfter.hwm.toFixed(1)} MiB)\n`);
    }
    return figures;
  } finally {
    // Best effort through the API first (the agent still runs), then --cleanup.
    for (const name of [...live]) await apiRequest(sock, 'DELETE', `/v1/endpoints/${encodeURIComponent(name)}`).catch(() => undefined);
    await agent.remove();
  }
}
