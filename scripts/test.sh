#!/usr/bin/env bash
# One command: set everything up, then run the whole test suite (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run lint
npm test
