#!/usr/bin/env node
/* global process, console */
// Runs the compiled tests: `node --test --test-concurrency=1` over the test files
// in dist/src and dist/test (whichever exist), with spec output on stdout and a
// TAP copy in a temp file. Exits with the runner's code; with CI=true it also
// fails when any test was skipped (a skipped root test in CI is a failure).
//
// Test files are the project's `*.test.js` (or .mjs/.cjs) files, listed
// explicitly: `node --test DIR` in Node 20 would also run every plain module
// under a `test/` directory (test/helpers/*.js) and modules named `test-*.js`
// (src/datapath/codecs/test-event.js), which are not tests.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const roots = ['dist/src', 'dist/test'].map((d) => join(root, d)).filter((d) => existsSync(d));
const TEST_FILE = /.\.test\.[cm]?js$/;

/** @param {string} dir @returns {string[]} */
function findTests(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : findTests(p);
    return e.isFile() && TEST_FILE.test(e.name) ? [p] : [];
  });
}

const files = roots.flatMap(findTests).sort();
if (files.length === 0) {
  console.error(`run-tests: no test files under ${roots.map((d) => relative(root, d)).join(', ') || 'dist/src, dist/test (missing)'}; run the build first`);
  process.exit(1);
}

const ci = process.env.CI === 'true';
const tmp = mkdtempSync(join(tmpdir(), 'waggle-tests-'));
const tapFile = join(tmp, 'results.tap');
const args = [
  '--test', '--test-concurrency=1',
  '--test-reporter=spec', '--test-reporter-destination=stdout',
  '--test-reporter=tap', `--test-reporter-destination=${tapFile}`,
  ...files.map((f) => relative(root, f)),
];

const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit' });
const forward = (/** @type {NodeJS.Signals} */ sig) => child.kill(sig);
process.on('SIGINT', forward);
process.on('SIGTERM', forward);

child.on('close', (code, signal) => {
  let exitCode = code ?? 1;
  if (signal) console.error(`run-tests: test runner killed by ${signal}`);
  if (ci) exitCode = checkNoSkips() || exitCode;
  rmSync(tmp, { recursive: true, force: true });
  process.exit(exitCode);
});

/** Returns 1 (and says why) if the TAP output shows skipped tests or cannot be read, else 0. */
function checkNoSkips() {
  let tap;
  try {
    tap = readFileSync(tapFile, 'utf8');
  } catch (err) {
    console.error(`run-tests: CI=true but no TAP results to check for skipped tests: ${err}`);
    return 1;
  }
  const skippedLines = tap.split('\n').filter((l) => /^\s*(not )?ok \d+\b.*#\s*SKIP\b/i.test(l));
  const summary = [...tap.matchAll(/^# skipped (\d+)$/gm)].map((m) => Number(m[1]));
  if (summary.length === 0) {
    console.error('run-tests: CI=true but the TAP results have no "# skipped" summary');
    return 1;
  }
  const skipped = Math.max(skippedLines.length, ...summary);
  if (skipped > 0) {
    console.error(`\nrun-tests: CI=true and ${skipped} test(s) were skipped; a skipped test in CI is a failure:`);
    for (const l of skippedLines) console.error(`  ${l.trim()}`);
    return 1;
  }
  return 0;
}
