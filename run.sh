#!/usr/bin/env bash
# ./run.sh [driftwatch up options]  -- install what is missing, then run everything locally:
# broker, InfluxDB, worker, dashboard and demo traffic. Prints the dashboard URL; Ctrl-C stops all.
# Options: --no-demo --no-dashboard --no-worker --keep-stack --dashboard-port N ... (see --help)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/bootstrap.sh
exec .venv/bin/driftwatch up "$@"
