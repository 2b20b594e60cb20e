#!/usr/bin/env bash
# nself plugin realtime rooms [list|create NAME|delete NAME|add-member ROOM USER|remove-member ROOM USER] [options]
# Without an action the rooms are listed. Options (--json, -a ACCOUNT, --type, ...) pass through.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/plugin-env.sh"
realtime_require_bin
action="${1:-list}"
case "$action" in
    list | create | delete | add-member | remove-member) shift || true ;;
    -*) action=list ;;
    *)
        printf 'usage: rooms [list|create NAME|delete NAME|add-member ROOM USER|remove-member ROOM USER] [options]\n' >&2
        exit 2
        ;;
esac
case "$action" in
    list) exec "$REALTIME_BIN" rooms "$@" ;;
    create) exec "$REALTIME_BIN" create-room "$@" ;;
    delete) exec "$REALTIME_BIN" delete-room "$@" ;;
    *) exec "$REALTIME_BIN" "$action" "$@" ;;
esac
