#!/usr/bin/env bash
# nself plugin realtime init [--json]: create or migrate the schema, create the default rooms, repair state.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/plugin-env.sh"
realtime_require_bin
exec "$REALTIME_BIN" init "$@"
