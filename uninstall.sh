#!/usr/bin/env bash
# Uninstalls the realtime plugin (nself's preUninstall hook).
#
#   uninstall.sh              stop the server, remove the installed binary, keep the data
#   uninstall.sh --purge      ... and drop the plugin's tables and delete its data and log directories
#                             (NSELF_REALTIME_PURGE=1 does the same)
#   uninstall.sh --keep-data  never ask (also -y/--yes); without a terminal nothing is ever asked
#
# Without --purge and with a terminal on stdin it asks whether to delete the data; the answer defaults to no.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/plugin-env.sh"

say() { printf '==> %s\n' "$*"; }

purge=""
case "${NSELF_REALTIME_PURGE:-}" in 1 | true | yes) purge=yes ;; esac
for arg in "$@"; do
    case "$arg" in
        --purge) purge=yes ;;
        --keep-data | -y | --yes | --non-interactive) purge="${purge:-no}" ;;
        -h | --help)
            sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            printf 'uninstall.sh: unknown option %s (try --help)\n' "$arg" >&2
            exit 2
            ;;
    esac
done
if [[ -z "$purge" ]]; then
    purge=no
    if [[ -t 0 ]]; then
        read -r -p "Also delete all realtime data (rooms, messages, events)? [y/N] " answer || answer=""
        [[ "$answer" =~ ^[Yy] ]] && purge=yes
    fi
fi

status=0
if bin="$(realtime_find_bin)"; then
    say "stopping the server"
    "$bin" server stop || status=1
    if [[ "$purge" == yes ]]; then
        say "dropping the plugin's tables"
        "$bin" purge --yes || status=1
    fi
else
    say "no nself-realtime binary found; nothing to stop"
    [[ "$purge" == yes ]] && { say "cannot drop the tables without the binary" >&2; status=1; }
fi

if [[ -e "$REALTIME_INSTALLED_BIN" ]]; then
    rm -f "$REALTIME_INSTALLED_BIN"
    say "removed $REALTIME_INSTALLED_BIN"
fi
if [[ "$purge" == yes && "$status" == 0 ]]; then
    rm -rf "$REALTIME_DATA_DIR" "$REALTIME_LOG_DIR"
    say "deleted $REALTIME_DATA_DIR and $REALTIME_LOG_DIR"
elif [[ "$purge" != yes ]]; then
    say "kept the data in $REALTIME_DATA_DIR (and the database tables); run uninstall.sh --purge to delete them"
fi
if [[ -f /etc/systemd/system/realtime.service ]]; then
    say "a systemd unit is installed: sudo systemctl disable --now realtime && sudo rm /etc/systemd/system/realtime.service"
fi
exit "$status"
