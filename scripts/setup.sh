#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine to build, test and run Waggle (as root):
# Debian packages, npm dependencies, the eBPF objects and the TypeScript build.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs Debian packages; Waggle itself needs root or CAP_BPF+CAP_NET_ADMIN)" >&2
  exit 1
fi

# clang/llvm build the datapath; libbpf-dev + linux-libc-dev give its headers;
# libbpf1 is what Waggle loads objects with at run time; iproute2, iputils-ping
# and iperf3 make the test and self-check topologies and traffic; bpftool is for
# inspecting what Waggle loaded; iptables and nftables are the classic firewalls
# the policy benchmarks compare Waggle with (Waggle itself uses neither);
# chromium is the headless browser the web UI test drives (through the npm
# playwright-core, with executablePath /usr/bin/chromium: no browser download).
PACKAGES=(clang llvm libbpf-dev libbpf1 linux-libc-dev iproute2 iputils-ping iperf3 bpftool iptables nftables chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js 20 or later is needed (found $(node --version))" >&2
  exit 1
fi

npm ci --no-audit --no-fund
npm run build
