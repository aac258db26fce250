import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, defaultConfig, envName, loadAgentConfig } from './config.js';

const dir = mkdtempSync(join(tmpdir(), 'waggle-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

test('defaults validate', () => {
  assert.deepEqual(loadAgentConfig({ env: {} }), defaultConfig());
});

test('flags beat environment beat the config file', () => {
  const cfg = loadAgentConfig({
    configFile: file('a.yaml', 'node-name: from-file\nstate-dir: /tmp/f\npod-cidr: [10.9.0.0/24]\n'),
    env: { WAGGLE_NODE_NAME: 'from-env', WAGGLE_HTTP_LISTEN: '127.0.0.1:0' },
    flags: { 'node-name': 'from-flag' },
  });
  assert.equal(cfg.nodeName, 'from-flag');
  assert.equal(cfg.stateDir, '/tmp/f');
  assert.equal(cfg.httpListen, '127.0.0.1:0');
  assert.deepEqual(cfg.podCidr, ['10.9.0.0/24']);
  assert.equal(envName('pod-cidr'), 'WAGGLE_POD_CIDR');
  assert.deepEqual(loadAgentConfig({ env: { WAGGLE_POD_CIDR: '10.1.0.0/16, fd01::/64' } }).podCidr, ['10.1.0.0/16', 'fd01::/64']);
});

test('bad values are named with their source', () => {
  assert.throws(() => loadAgentConfig({ env: {}, flags: { 'state-dir': 'relative/dir' } }), /state-dir \(from flags\): must be an absolute path/);
  assert.throws(() => loadAgentConfig({ env: { WAGGLE_HTTP_LISTEN: 'nope' } }), /http-listen \(from WAGGLE_HTTP_LISTEN\): must be HOST:PORT/);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { 'pod-cidr': ['10.0.0.1/24'] } }), /pod-cidr .*host bits set/);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { 'pod-cidr': ['10.0.0.0/24', '10.1.0.0/24'] } }), /more than one IPv4 pod CIDR/);
  assert.throws(() => loadAgentConfig({ env: { WAGGLE_FLOW_BUFFER: 'lots' } }), /flow-buffer must be a whole number/);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { 'node-name': 'Bad Name' } }), /node-name .*DNS label/);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { 'service-cidr': ['10.200.128.0/20'] } }), /service-cidr .*10\.200\.128\.0\/20 overlaps the pod CIDR 10\.200\.0\.0\/16/);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { 'service-cidr': ['10.96.0.0/16', '10.97.0.0/16'] } }), /service-cidr .*at most one IPv4 and one IPv6/);
  assert.throws(() => loadAgentConfig({ env: { WAGGLE_MAGLEV_TABLE_SIZE: '16384' } }), /maglev-table-size .*must be a prime/);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { 'node-port-range': '32767-30000' } }), /node-port-range .*first not after last/);
});

test('service options: defaults and values', () => {
  const d = loadAgentConfig({ env: {} });
  assert.deepEqual(d.serviceCidr, ['10.96.0.0/16', 'fd00:96::/112']);
  assert.equal(d.maglevTableSize, 16381);
  assert.equal(d.nodePortRange, '30000-32767');
  const c = loadAgentConfig({ env: { WAGGLE_SERVICE_CIDR: '10.43.0.0/16', WAGGLE_MAGLEV_TABLE_SIZE: '65521' } });
  assert.deepEqual(c.serviceCidr, ['10.43.0.0/16']);
  assert.equal(c.maglevTableSize, 65521);
});

test('a bad config file is refused with the reason', () => {
  assert.throws(() => loadAgentConfig({ configFile: join(dir, 'missing.yaml'), env: {} }), /cannot read config file .*missing.yaml: ENOENT/);
  assert.throws(() => loadAgentConfig({ configFile: file('b.yaml', 'node-name: [unclosed\n'), env: {} }), (e: unknown) => e instanceof ConfigError && /is not valid YAML/.test(e.message));
  assert.throws(() => loadAgentConfig({ configFile: file('c.yaml', 'nodename: x\n'), env: {} }), /unknown option "nodename"/);
  assert.throws(() => loadAgentConfig({ configFile: file('d.yaml', '- a\n- b\n'), env: {} }), /must be a YAML mapping/);
  assert.throws(() => loadAgentConfig({ configFile: file('e.yaml', 'flow-buffer: -1\n'), env: {} }), /flow-buffer \(from config file .*e.yaml\)/);
});

test('--devices: none by default; repeated, comma-separated, from YAML or the environment; bad names refused', () => {
  assert.deepEqual(loadAgentConfig({ env: {} }).devices, []);
  assert.deepEqual(loadAgentConfig({ env: {}, flags: { devices: ['eth0,eth1', 'bond0'] } }).devices, ['eth0', 'eth1', 'bond0']);
  assert.deepEqual(loadAgentConfig({ env: { WAGGLE_DEVICES: 'eth0, eth1' } }).devices, ['eth0', 'eth1']);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { devices: ['eth0', 'eth0'] } }), /devices .*names a device twice/);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { devices: ['a-name-longer-than-15'] } }), /devices .*must be a network device name/);
  assert.throws(() => loadAgentConfig({ env: {}, flags: { devices: ['../etc'] } }), /devices .*must be a network device name/);
});
