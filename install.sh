#!/usr/bin/env bash
# Installs the realtime plugin (nself's postInstall hook; also fine to run by hand, and to run again).
#
#  1. finds a binary: $NSELF_REALTIME_BIN, else `cargo build --release` here, else one already built
#  2. installs it as ~/.nself/bin/nself-realtime, where the actions look first
#  3. creates ~/.nself/data/plugins/realtime and ~/.nself/logs/plugins/realtime
#  4. runs `nself-realtime init` (schema, default rooms) against the configured database
#
# Needs no terminal and no `nself` on PATH. The database is whatever the environment configures
# (DATABASE_URL or POSTGRES_*), else an SQLite file in the data directory.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/plugin-env.sh"

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

source_binary() {
    if [[ -n "${NSELF_REALTIME_BIN:-}" ]]; then
        [[ -x "$NSELF_REALTIME_BIN" ]] || die "NSELF_REALTIME_BIN=$NSELF_REALTIME_BIN is not an executable file"
        printf '%s\n' "$NSELF_REALTIME_BIN"
        return
    fi
    local built="$REALTIME_PLUGIN_DIR/target/release/nself-realtime"
    if [[ -f "$REALTIME_PLUGIN_DIR/Cargo.toml" ]] && command -v cargo >/dev/null 2>&1; then
        say "building the release binary (cargo build --release; a no-op when it is up to date)" >&2
        (cd "$REALTIME_PLUGIN_DIR" && cargo build --release --locked --bin nself-realtime >&2) ||
            die "cargo build failed"
        printf '%s\n' "$built"
    elif [[ -x "$built" ]]; then
        printf '%s\n' "$built"
    elif [[ -x "$REALTIME_INSTALLED_BIN" ]]; then
        printf '%s\n' "$REALTIME_INSTALLED_BIN"
    else
        die "no nself-realtime binary: install Rust (https://rustup.rs) and run again, or set NSELF_REALTIME_BIN"
    fi
}

src="$(source_binary)"
mkdir -p "$(dirname "$REALTIME_INSTALLED_BIN")" "$REALTIME_DATA_DIR" "$REALTIME_LOG_DIR"
if [[ "$src" -ef "$REALTIME_INSTALLED_BIN" ]] || cmp -s "$src" "$REALTIME_INSTALLED_BIN"; then
    say "binary up to date: $REALTIME_INSTALLED_BIN"
else
    # Copy then rename: replacing a binary that a running server executes must not fail or corrupt it.
    cp "$src" "$REALTIME_INSTALLED_BIN.tmp.$$"
    chmod 0755 "$REALTIME_INSTALLED_BIN.tmp.$$"
    mv -f "$REALTIME_INSTALLED_BIN.tmp.$$" "$REALTIME_INSTALLED_BIN"
    say "installed $REALTIME_INSTALLED_BIN ($("$REALTIME_INSTALLED_BIN" --version))"
fi
say "data: $REALTIME_DATA_DIR"
say "logs: $REALTIME_LOG_DIR"

say "initialising the database"
"$REALTIME_INSTALLED_BIN" init || die "init failed; check DATABASE_URL / POSTGRES_* and run install.sh again"

port="${REALTIME_PORT:-${PORT:-3101}}"
cat <<NEXT

The realtime plugin is installed.

Next steps:
  1. Set REALTIME_JWT_SECRET (the secret your auth service signs tokens with) in your .env,
     or REALTIME_ALLOW_DEV_TOKENS=true while developing. All settings: $REALTIME_PLUGIN_DIR/.env.example
  2. Start the server:      nself plugin realtime server start
  3. Check it:              nself plugin realtime status     (or curl http://127.0.0.1:$port/health)
  4. Follow its log:        nself plugin realtime server logs -f
  Clients connect with socket.io-client to http://<host>:$port (see QUICKSTART.md).
  The binary is $REALTIME_INSTALLED_BIN; add $(dirname "$REALTIME_INSTALLED_BIN") to PATH to run it directly.
  On a production host run it under systemd instead: see docs/operations.md and templates/realtime.service.
NEXT
