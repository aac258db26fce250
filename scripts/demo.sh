#!/usr/bin/env bash
# One command: set everything up, then run Waggle's main job: the demo (an
# agent, labelled endpoints, real traffic and its flows, a spoofed packet
# dropped, then a clean exit). Extra arguments go to `waggle demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node dist/src/cli/main.js demo "$@"
