"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const history = { mps: [], bps: [], p50: [], p99: [], eps: [] };
  const KEEP = 120;
  const fmt = (n) => (n === null || n === undefined ? "–" : String(n));
  const text = (el, v) => { el.textContent = v; };
  const push = (list, v) => { list.push(v === null || v === undefined ? 0 : v); if (list.length > KEEP) list.shift(); };

  function spark(id, series, colors) {
    const c = $(id);
    const w = (c.width = c.clientWidth * devicePixelRatio);
    const h = (c.height = 36 * devicePixelRatio);
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    const max = Math.max(1, ...series.flat());
    series.forEach((s, i) => {
      g.strokeStyle = colors[i];
      g.lineWidth = devicePixelRatio * 1.5;
      g.beginPath();
      s.forEach((v, x) => {
        const px = ((KEEP - s.length + x) / (KEEP - 1)) * w; // the newest point at the right edge
        const py = h - (v / max) * (h - 2) - 1;
        x ? g.lineTo(px, py) : g.moveTo(px, py);
      });
      g.stroke();
    });
  }

  function rows(tbody, list, cells) {
    tbody.replaceChildren(...list.map((item) => {
      const tr = document.createElement("tr");
      cells(item).forEach(([v, cls]) => {
        const td = document.createElement("td");
        td.textContent = fmt(v);
        if (cls) td.className = cls;
        tr.appendChild(td);
      });
      return tr;
    }));
  }

  function render(s) {
    const accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#2563eb";
    const warn = "#d97706";
    text($("node"), `${s.node.id} · v${s.node.version} · up ${s.node.uptime}s · account ${s.account}`);
    text($("connections"), s.connections);
    text($("connections-sub"), `${s.polling} polling · ${s.connectionsAllAccounts} on all accounts`);
    text($("users"), s.usersOnline);
    const p = s.presence;
    text($("presence"), `online ${p.online} · away ${p.away} · busy ${p.busy}`);
    text($("mps"), s.messagesPerSecond);
    text($("bps"), s.broadcastsPerSecond);
    text($("eps"), s.errorsPerSecond);
    text($("latency"), `${fmt(s.latency.p50)} / ${fmt(s.latency.p99)}`);
    push(history.mps, s.messagesPerSecond);
    push(history.bps, s.broadcastsPerSecond);
    push(history.eps, s.errorsPerSecond);
    push(history.p50, s.latency.p50);
    push(history.p99, s.latency.p99);
    spark("spark-mps", [history.mps], [accent]);
    spark("spark-bps", [history.bps], [accent]);
    spark("spark-eps", [history.eps], ["#dc2626"]);
    spark("spark-lat", [history.p99, history.p50], [warn, accent]);
    rows($("rooms").tBodies[0], s.rooms, (r) => [[r.name], [r.sockets, "num"]]);
    const deps = [["database", s.database], ["redis", s.redis]].filter(([, d]) => d);
    rows($("deps").tBodies[0], deps, ([name, d]) => [
      [d.kind ? `${name} (${d.kind})` : name],
      [d.status, d.status === "connected" ? "ok" : "bad"],
      [`${d.latencyMs} ms`, "num"],
    ]);
    $("nodes").replaceChildren(...s.nodes.map((n) => { const li = document.createElement("li"); li.textContent = n; return li; }));
    rows($("events").tBodies[0], s.events, (e) => [[e.at.replace("T", " ").replace(/\.\d+Z$/, "")], [e.type], [e.userId], [e.room]]);
  }

  function connect() {
    const es = new EventSource(location.pathname.replace(/\/$/, "") + "/stream" + location.search);
    es.addEventListener("snapshot", (e) => {
      const live = $("live");
      live.className = "pill";
      live.textContent = "live";
      render(JSON.parse(e.data));
    });
    es.onerror = () => {
      const live = $("live");
      live.className = "pill off";
      live.textContent = "reconnecting…";
    };
  }
  connect();
})();
