#!/usr/bin/env bash
# nself plugin realtime status [--json]: running or not, pid, uptime, connections, dependencies.
# Exit code 0 running, 3 not running, 4 running but not answering.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/plugin-env.sh"
realtime_require_bin
exec "$REALTIME_BIN" server status "$@"
