#!/usr/bin/env bash
# One command: set everything up, then run Waggle's main job (for now the
# datapath self-check: load, attach in a throw-away namespace, pass traffic,
# print what the kernel counted, clean up).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node dist/src/cli/main.js selfcheck
