#!/usr/bin/env bash
# nself plugin realtime server [start|stop|restart|status|logs [N] [-f]|run] [options]
# Without an action the server is started in the background.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/plugin-env.sh"
realtime_require_bin
action="${1:-start}"
shift || true
# `server logs 100` (the nself convention) means `server logs -n 100`.
if [[ "$action" == logs && "${1:-}" =~ ^[0-9]+$ ]]; then
    set -- -n "$@"
fi
exec "$REALTIME_BIN" server "$action" "$@"
