#!/usr/bin/env python3
"""Turns `nself-realtime bench --json` results (one JSON object per line) into markdown tables:
a summary of the headline figures first, then one table per scenario variant, one column per server,
plus realtime ÷ baseline ratios.

Usage: render.py RESULTS.jsonl [--check]
  --check  exit 1 when a run did not connect every client or moved no traffic (no timing asserted).
"""
import json
import sys

# (result key, label, unit kind) per scenario; dotted keys reach into latency objects.
METRICS = {
    "connect": [
        ("connected", "connected", "int"),
        ("failed", "failed", "int"),
        ("connect_rate", "connect rate (conn/s)", "num"),
        ("handshake_ms.p50", "handshake p50 (ms)", "ms"),
        ("handshake_ms.p99", "handshake p99 (ms)", "ms"),
        ("handshake_ms.max", "handshake max (ms)", "ms"),
        ("server_cpu_percent_ramp", "server CPU during ramp (% core)", "num"),
        ("server_rss_after_bytes", "server RSS, all connected (MiB)", "mib"),
    ],
    "idle": [
        ("held", "connections held", "int"),
        ("joined", "room joins ok", "int"),
        ("lost_during_hold", "dropped during the window", "int"),
        ("server_rss_per_conn_bytes", "server RSS per connection (KiB)", "kib"),
        ("server_rss_end_bytes", "server RSS at the end (MiB)", "mib"),
        ("server_idle_cpu_percent", "server idle CPU (% core)", "num2"),
        ("bench_rss_per_conn_bytes", "bench RSS per connection (KiB)", "kib"),
    ],
    "fanout": [
        ("deliveries_per_s", "deliveries/s", "num"),
        ("delivery_ratio", "delivery ratio", "num4"),
        ("delivery_window_s", "delivery window (s)", "num2"),
        ("deliver_ms.p50", "publish→deliver p50 (ms)", "ms"),
        ("deliver_ms.p95", "publish→deliver p95 (ms)", "ms"),
        ("deliver_ms.p99", "publish→deliver p99 (ms)", "ms"),
        ("deliver_ms.max", "publish→deliver max (ms)", "ms"),
        ("ack_ms.p50", "ack p50 (ms)", "ms"),
        ("ack_ms.p99", "ack p99 (ms)", "ms"),
        ("ack_errors", "ack errors", "int"),
        ("unacked", "never acked", "int"),
        ("server_cpu_percent", "server CPU while sending (% core)", "num"),
        ("bench_cpu_percent", "bench CPU while sending (% core)", "num"),
    ],
    "storm": [
        ("connected", "connected before the storm", "int"),
        ("all_back_seconds", "time until all back (s)", "num2"),
        ("reconnected", "reconnected", "int"),
        ("reconnect_failed", "gave up", "int"),
        ("reconnect_ms.p50", "drop→authenticated p50 (ms)", "ms"),
        ("reconnect_ms.p99", "drop→authenticated p99 (ms)", "ms"),
        ("reconnect_ms.max", "drop→authenticated max (ms)", "ms"),
    ],
    "cycles": [
        ("connected_min", "connected in the smallest wave", "int"),
        ("rss_connected_first_bytes", "RSS with the first wave connected (MiB)", "mib"),
        ("rss_connected_max_bytes", "largest RSS with a wave connected (MiB)", "mib"),
        ("connected_growth_percent", "largest over the first (%)", "pct"),
        ("rss_rested_last_bytes", "RSS after the last rest (MiB)", "mib"),
    ],
    "typing": [
        ("sent", "typing:start sent", "int"),
        ("broadcasts", "typing:event received", "int"),
        ("amplification", "amplification (received per sent)", "num3"),
        ("naive_amplification", "naive broadcast (M − 1)", "int"),
        ("server_cpu_percent", "server CPU while sending (% core)", "num"),
    ],
    "presence": [
        ("sent", "presence:update sent", "int"),
        ("broadcasts", "presence:changed received", "int"),
        ("amplification", "amplification (received per sent)", "num3"),
        ("naive_amplification", "naive broadcast (M − 1)", "int"),
        ("server_cpu_percent", "server CPU while sending (% core)", "num"),
    ],
}

SERVER_ORDER = ["realtime", "socketioxide", "node"]


def get(d, dotted):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "mib":
        return f"{v / 1048576:,.1f}"
    if kind == "kib":
        return f"{v / 1024:,.1f}"
    if kind == "num4":
        return f"{v:.4f}"
    if kind == "num3":
        return f"{v:.3f}"
    if kind in ("num2", "pct"):
        return f"{v:,.2f}"
    if kind == "ms":
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def ratio(a, c, kind):
    """realtime ÷ baseline, to two decimals, or three where two would round a ratio off 1 to exactly 1.00 (0.997
    and 1.003 are on different sides of a ≥ 1.0 target). None for percentages (a ratio of growths says little)."""
    if kind == "pct" or not isinstance(a, (int, float)) or not isinstance(c, (int, float)) or not c:
        return "–"
    r = a / c
    return f"{r:.3f}×" if f"{r:.2f}" == "1.00" and r != 1 else f"{r:.2f}×"


VARIANTS = {
    "peak": "peak",
    "half": "half the socketioxide baseline's peak",
    "max": "most connections",
}


def variant_title(r):
    title = scenario_title(r)
    v = r.get("variant")
    return f"{VARIANTS.get(v, v)}: {title}" if v else title


def scenario_title(r):
    p = r.get("params", {})
    s = r["scenario"]
    if s == "cycles":
        return (f"cycles — {p.get('cycles')} waves of {p.get('connections', 0):,} clients on one server process, "
                f"{p.get('rest_s'):g} s rest after each")
    if s in ("connect", "storm"):
        return f"{s} — {p.get('connections', '?'):,} clients"
    if s == "idle":
        rooms = f", {p['joins']} of {p['rooms']:,} rooms each" if p.get("rooms") else ""
        return f"idle — {p.get('connections', '?'):,} connections held {p.get('duration_s', '?')} s{rooms}"
    if s == "fanout":
        return (f"fanout — {p.get('rooms')} rooms × {p.get('members')} members, {p.get('senders')} senders, "
                f"{p.get('rate'):g} msg/s, {p.get('payload_bytes')} B, {p.get('duration_s')} s")
    return (f"{s} — {p.get('rooms')} rooms × {p.get('members')} members, {p.get('senders')} senders, "
            f"{p.get('rate'):g} events/s, {p.get('duration_s')} s")


def check(r):
    """Functional smoke checks (no timing)."""
    res, p, s = r.get("results", {}), r.get("params", {}), r["scenario"]
    problems = []
    want = p.get("connections")
    got = res.get("connected")
    if want is not None and s != "cycles" and got != want:
        problems.append(f"connected {got} of {want}")
    if s == "idle" and p.get("rooms") and want is not None and res.get("joined") != want * p.get("joins", 1):
        problems.append(f"joined {res.get('joined')} rooms of {want * p.get('joins', 1)}")
    if s == "fanout" and not (res.get("acked") or 0) > 0:
        problems.append("no message acked")
    if s == "fanout" and not (res.get("deliveries") or 0) > 0:
        problems.append("no message delivered")
    if s in ("typing", "presence") and not (res.get("sent") or 0) > 0:
        problems.append("nothing sent")
    if s == "cycles" and (res.get("waves") != p.get("cycles") or (res.get("connected_min") or 0) < (want or 0)):
        problems.append(f"{res.get('waves')} of {p.get('cycles')} waves, smallest {res.get('connected_min')} of {want}")
    if s == "storm" and (res.get("reconnected") or 0) < (want or 0):
        problems.append(f"only {res.get('reconnected')} of {want} reconnected")
    return problems


# The headline rows: (label, which run, result key, unit kind). A run is named by its scenario and variant (None:
# the first run of the scenario without one, i.e. the 100 B fan-out of the fanout scenario).
SUMMARY = [
    ("idle: server RSS per connection (KiB)", ("idle", None), "server_rss_per_conn_bytes", "kib"),
    ("connect: connections/s", ("connect", None), "connect_rate", "num"),
    ("connect: failed", ("connect", None), "failed", "int"),
    ("peak fan-out: deliveries/s", ("fanout", "peak"), "deliveries_per_s", "num"),
    ("peak fan-out: publish→deliver p99 (ms)", ("fanout", "peak"), "deliver_ms.p99", "ms"),
    ("at half the library's peak: deliveries/s", ("fanout", "half"), "deliveries_per_s", "num"),
    ("at half the library's peak: publish→deliver p99 (ms)", ("fanout", "half"), "deliver_ms.p99", "ms"),
    ("fan-out 100 B: publish→deliver p99 (ms)", ("fanout", None), "deliver_ms.p99", "ms"),
    ("most connections: held", ("idle", "max"), "held", "int"),
    ("most connections: RSS at the end (MiB)", ("idle", "max"), "server_rss_end_bytes", "mib"),
    ("cycles: largest connected RSS over the first wave's (%)", ("cycles", None), "connected_growth_percent", "pct"),
    ("storm: time until all back (s)", ("storm", None), "all_back_seconds", "num2"),
]


def summary(runs):
    """The headline figures of the run in one table (rows whose runs are missing are left out)."""
    first = {}
    for r in runs:
        first.setdefault((r["scenario"], r.get("variant"), r.get("label") or r.get("url")), r)
    servers = [s for s in SERVER_ORDER if any(k[2] == s for k in first)]
    baselines = [s for s in servers if s != "realtime"] if "realtime" in servers else []
    rows = []
    for label, (scenario, variant), key, kind in SUMMARY:
        vals = {s: get(first[(scenario, variant, s)].get("results", {}), key)
                for s in servers if (scenario, variant, s) in first}
        if all(v is None for v in vals.values()):
            continue
        row = [label] + [fmt(vals.get(s), kind) for s in servers]
        row += [ratio(vals.get("realtime"), vals.get(b), kind) for b in baselines]
        rows.append(row)
    if not rows:
        return
    header = ["figure"] + servers + [f"realtime ÷ {b}" for b in baselines]
    print("## Summary\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    path, do_check = argv[0], "--check" in argv[1:]
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    summary(runs)
    groups = {}
    for r in runs:
        groups.setdefault(variant_title(r), []).append(r)
    failures = []
    for title, rs in groups.items():
        by_server = {}
        for r in rs:
            by_server[r.get("label") or r.get("url")] = r
        servers = [s for s in SERVER_ORDER if s in by_server] + [s for s in by_server if s not in SERVER_ORDER]
        baselines = [s for s in servers if s != "realtime"] if "realtime" in servers else []
        header = ["metric"] + servers + [f"realtime ÷ {b}" for b in baselines]
        print(f"## {title}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for key, label, kind in METRICS.get(rs[0]["scenario"], []):
            vals = {s: get(by_server[s].get("results", {}), key) for s in servers}
            row = [label] + [fmt(vals[s], kind) for s in servers]
            row += [ratio(vals.get("realtime"), vals.get(b), kind) for b in baselines]
            print("| " + " | ".join(row) + " |")
        reasons = []
        for s in servers:
            res = by_server[s].get("results", {})
            for k in ("failures", "connect_failures", "reconnect_failures", "lost_reasons", "ack_error_codes"):
                for reason, n in (res.get(k) or {}).items():
                    reasons.append(f"{s}: {k.replace('_', ' ')}: {n} × {reason}")
        if reasons:
            print("\n" + "\n".join(f"- {x}" for x in reasons))
        print()
        for s in servers:
            for p in check(by_server[s]):
                failures.append(f"{title} / {s}: {p}")
    if do_check and failures:
        print("### check failed\n")
        print("\n".join(f"- {x}" for x in failures))
        print()
        return 1
    if not runs:
        print("(no results)")
        return 1 if do_check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
