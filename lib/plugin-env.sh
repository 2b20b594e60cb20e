# Sourced by install.sh, uninstall.sh and actions/*.sh: where the plugin keeps its binary, data and logs, and
# which binary to run. Every script goes through the binary; none of them builds SQL.
#
#   NSELF_HOME          nself's per-user directory            (default ~/.nself)
#   NSELF_REALTIME_BIN  the nself-realtime binary to use      (default: the installed one, then PATH)
#   REALTIME_DATA_DIR   SQLite database and pid file          (default $NSELF_HOME/data/plugins/realtime)
#   REALTIME_LOG_DIR    log file of `server start`            (default $NSELF_HOME/logs/plugins/realtime)

REALTIME_PLUGIN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NSELF_HOME="${NSELF_HOME:-${HOME:?HOME is not set}/.nself}"
REALTIME_INSTALLED_BIN="$NSELF_HOME/bin/nself-realtime"
export REALTIME_DATA_DIR="${REALTIME_DATA_DIR:-$NSELF_HOME/data/plugins/realtime}"
export REALTIME_LOG_DIR="${REALTIME_LOG_DIR:-$NSELF_HOME/logs/plugins/realtime}"

# Prints the binary the actions should run, or nothing when there is none.
realtime_find_bin() {
    local candidate
    for candidate in "${NSELF_REALTIME_BIN:-}" "$REALTIME_INSTALLED_BIN" "$(command -v nself-realtime 2>/dev/null || true)" \
        "$REALTIME_PLUGIN_DIR/target/release/nself-realtime"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

# Sets REALTIME_BIN or exits with a message saying how to get one.
realtime_require_bin() {
    if ! REALTIME_BIN="$(realtime_find_bin)"; then
        printf 'nself-realtime is not installed: run %s/install.sh (or set NSELF_REALTIME_BIN)\n' "$REALTIME_PLUGIN_DIR" >&2
        exit 127
    fi
}
