/**
 * Runs the benchmarks: `npm run bench` (all), `npm run bench -- NAME` (one),
 * `--json` for one JSON object of figures per benchmark (one per line).
 */
type Bench = { run(opts: { json: boolean }): Promise<Record<string, number>> };

const benches: Record<string, { describe: string; load: () => Promise<Bench> }> = {
  endpoints: { describe: 'endpoint create + delete through the agent API', load: () => import('./endpoints.js') },
  ffi: { describe: 'FFI cost per call', load: () => import('./ffi.js') },
  forwarding: { describe: 'endpoint-to-endpoint forwarding vs a Linux bridge', load: () => import('./forwarding.js') },
  maps: { describe: 'map operations on a 64k-entry hash map', load: () => import('./maps.js') },
  observe: { describe: 'flow pipeline: ingest flows/s, memory per flow, agent CPU at 10k flows/s, observe --follow latency', load: () => import('./observe.js') },
  policy: { describe: 'policy cost in the datapath and control plane, iptables/nftables side by side', load: () => import('./policy.js') },
  ringbuf: { describe: 'ring buffer consume + decode', load: () => import('./ringbuf.js') },
  services: { describe: 'service load balancing: per packet, connections vs kube-proxy iptables/nftables, control plane, Maglev', load: () => import('./services.js') },
  testrun: { describe: 'BPF_PROG_TEST_RUN ns per packet', load: () => import('./testrun.js') },
};

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const names = args.filter((a) => !a.startsWith('-'));
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`usage: npm run bench -- [NAME…] [--json]\n${Object.entries(benches).map(([n, b]) => `  ${n.padEnd(8)} ${b.describe}`).join('\n')}\n`);
    return 0;
  }
  for (const n of names) {
    if (!benches[n]) {
      process.stderr.write(`bench: no benchmark ${n} (have ${Object.keys(benches).join(', ')})\n`);
      return 2;
    }
  }
  if (process.getuid?.() !== 0) process.stderr.write('bench: most benchmarks need root\n');
  for (const name of names.length > 0 ? names : Object.keys(benches)) {
    const bench = await (benches[name] as { load: () => Promise<Bench> }).load();
    if (!json) process.stdout.write(`\n== ${name}: ${benches[name]?.describe}\n`);
    const figures = await bench.run({ json });
    if (json) process.stdout.write(`${JSON.stringify({ bench: name, time: new Date().toISOString(), ...figures })}\n`);
  }
  return 0;
}

process.exitCode = await main();
