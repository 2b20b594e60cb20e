// A wire-level fuzz client: random and mutated Engine.IO / Socket.IO frames over WebSocket and long-polling
// (bad packet types, lying binary attachment counts, deep JSON, huge event names, many namespaces, NULs,
// slowloris byte-by-byte frames and bodies) at a real server for a bounded time, while two well-behaved users
// talk in a room. The server stays up, the users miss nothing (their p99 is printed), RSS comes back near
// its baseline. FUZZ_SECONDS=<n> runs longer. Run against SQLite and PostgreSQL.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import WebSocket from 'ws';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, assertOk,
  uid, join, eventually, sleep, mintToken, http,
} from './harness.mjs';

noteSkips();

const SECONDS = Number(process.env.FUZZ_SECONDS || 20);
const WORKERS = 6;

/** xorshift32: the same frames for the same seed. */
function rng(seed) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x;
  };
  return { below: (n) => next() % Math.max(1, n), next };
}

const EVENTS = ['message:send', 'room:join', 'typing:start', 'presence:update', 'reaction:add', 'sync:messages', 'auth:refresh', 'ping', 'x'];

/** One Socket.IO / Engine.IO text frame a client should never send (or a valid one, now and then). */
function frame(r, token) {
  const deep = (n) => '['.repeat(n) + ']'.repeat(n);
  const pick = (a) => a[r.below(a.length)];
  switch (r.below(16)) {
    case 0: return String.fromCharCode(r.below(128)) + 'garbage';
    case 1: return `4${r.below(10)}${'x'.repeat(r.below(20))}`;
    case 2: return `45${1 + r.below(9)}-["${pick(EVENTS)}",{"_placeholder":true,"num":${r.below(100)}}]`; // lying attachment count
    case 3: return `42["${pick(EVENTS)}",${deep(1 + r.below(3000))}]`;
    case 4: return `42["${'e'.repeat(1000 + r.below(200_000))}"]`; // huge event name
    case 5: return `40/ns${r.below(100_000)},{"token":"${token}"}`; // many namespaces
    case 6: return `42["${pick(EVENTS)}",{"roomName":"a\u0000b","content":"\u0000"}]`;
    case 7: return `42\u0000["${pick(EVENTS)}"]`;
    case 8: return `40{"token":"${token}"}`;
    case 9: return `42${r.below(1e9)}["${pick(EVENTS)}",{"roomName":"fz${r.below(5)}","content":"hi"}]`;
    case 10: return `42["${pick(EVENTS)}",${JSON.stringify({ roomName: 'fz', content: 'x'.repeat(r.below(40_000)), metadata: { a: deep(50) } })}]`;
    case 11: return `43${r.below(1e9)}[${'null,'.repeat(r.below(1000))}null]`;
    case 12: return `2probe`;
    case 13: return `41/${'n'.repeat(r.below(5000))},`;
    case 14: return Buffer.from(Array.from({ length: r.below(64) }, () => r.below(256))).toString('latin1');
    default: return `42["${pick(EVENTS)}"${',{}'.repeat(r.below(50))}]`;
  }
}

function wsSession(server, r, token, until) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`);
    const done = () => { try { ws.terminate(); } catch { /* closed */ } resolve(); };
    const timer = setTimeout(done, 500 + r.below(1500));
    ws.on('error', () => {});
    ws.on('close', () => { clearTimeout(timer); resolve(); });
    ws.on('unexpected-response', (req, res) => { res.resume(); req.destroy(); clearTimeout(timer); resolve(); });
    ws.on('message', () => {});
    ws.on('open', async () => {
      try {
        const n = 1 + r.below(30);
        for (let i = 0; i < n && Date.now() < until && ws.readyState === WebSocket.OPEN; i++) {
          const f = frame(r, token);
          if (r.below(10) === 0) {
            // slowloris: one frame in byte-sized fragments
            const bytes = Buffer.from(f.slice(0, 40));
            for (let j = 0; j < bytes.length && ws.readyState === WebSocket.OPEN; j++) {
              ws.send(bytes.subarray(j, j + 1), { fin: j === bytes.length - 1, binary: false });
              await sleep(5);
            }
          } else if (r.below(8) === 0) {
            ws.send(Buffer.from(f, 'latin1'), { binary: true });
          } else {
            ws.send(f);
          }
        }
      } catch { /* the server closed it */ }
    });
  });
}

function post(server, path, body, { slow = false } = {}) {
  return new Promise((resolve) => {
    const req = request(`${server.url}${path}`, { method: 'POST', headers: { 'Content-Type': 'text/plain;charset=UTF-8', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    req.setTimeout(5000, () => { req.destroy(); resolve(0); });
    if (!slow) return req.end(body);
    const bytes = Buffer.from(body).subarray(0, 60);
    (async () => {
      for (let j = 0; j < bytes.length; j++) {
        req.write(bytes.subarray(j, j + 1));
        await sleep(20);
      }
      req.destroy();
      resolve(0);
    })();
  });
}

async function pollingSession(server, r, token) {
  const hs = await http(server, 'GET', '/socket.io/?EIO=4&transport=polling');
  const text = typeof hs.body === 'string' ? hs.body : JSON.stringify(hs.body);
  const m = /"sid":"([^"]+)"/.exec(text);
  if (!m) return;
  const path = `/socket.io/?EIO=4&transport=polling&sid=${m[1]}`;
  const n = 1 + r.below(6);
  for (let i = 0; i < n; i++) {
    const packets = Array.from({ length: 1 + r.below(5) }, () => (r.below(3) ? '4' : '') + frame(r, token));
    const body = packets.join(r.below(5) ? '\u001e' : '');
    await post(server, path, body, { slow: r.below(12) === 0 });
  }
  await post(server, path, '1');
}

async function rss(server) {
  const r = await http(server, 'GET', '/metrics');
  const line = String(r.body).split('\n').find((l) => l.startsWith('process_resident_memory_bytes '));
  return Number(line.split(' ')[1]);
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : NaN;
}

for (const backend of backends()) {
  describe(`wire fuzz: ${WORKERS} fuzzing clients for ${SECONDS} s [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({
        backend: backend.name,
        env: { REALTIME_RATE_LIMIT: '0', REALTIME_RATE_LIMIT_POINTS: '1000000', REALTIME_CONNECT_TIMEOUT: '2000' },
      });
    });
    after(() => shutdown(server));

    it('the server stays up, a well-behaved pair in another room misses nothing, RSS returns near its baseline', async () => {
      const room = uid('calm');
      const a = (await connectClient(server, { user: uid('a') })).socket;
      const b = (await connectClient(server, { user: uid('b') })).socket;
      await join(a, room);
      await join(b, room);
      const baseline = await rss(server);
      const latencies = [];
      let got = 0;
      b.on('message:new', (m) => {
        if (m.content.startsWith('t|')) { latencies.push(Date.now() - Number(m.content.slice(2))); got++; }
      });
      let sent = 0;
      const talk = setInterval(() => { sent++; a.emit('message:send', { roomName: room, content: `t|${Date.now()}` }); }, 50);

      const token = mintToken(uid('fz'));
      const until = Date.now() + SECONDS * 1000;
      const counts = { ws: 0, polling: 0 };
      let peak = baseline;
      const sampler = setInterval(async () => { try { peak = Math.max(peak, await rss(server)); } catch { /* busy */ } }, 1000);
      try {
        await Promise.all(Array.from({ length: WORKERS }, async (_, w) => {
          const r = rng(0x2026 + w);
          while (Date.now() < until && !server.exit) {
            if (r.below(3)) { counts.ws++; await wsSession(server, r, token, until); } else { counts.polling++; await pollingSession(server, r, token); }
          }
        }));
      } finally {
        clearInterval(talk);
        clearInterval(sampler);
      }
      assert.equal(server.exit, null, `the server is still running: ${server.logs(3000)}`);
      assert.ok(!/panicked/.test(server.output), `nothing panicked: ${server.logs(3000)}`);
      await eventually('b to receive every message of a', () => got === sent, { timeoutMs: 30_000 });
      // Sessions the fuzzers left are closed by the connect timeout (2 s) or the heartbeat; memory is returned.
      let after = await rss(server);
      await eventually('RSS to come back near its baseline', async () => {
        after = await rss(server);
        return after <= baseline + 32 * 1024 * 1024;
      }, { timeoutMs: 60_000, intervalMs: 1000 });
      latencies.sort((x, y) => x - y);
      const mb = (n) => (n / 1048576).toFixed(1);
      console.log(`wire fuzz [${backend.name}]: ${counts.ws} websocket and ${counts.polling} polling sessions in ${SECONDS} s; ` +
        `the pair's latency p50 ${percentile(latencies, 50)} ms, p99 ${percentile(latencies, 99)} ms over ${latencies.length} messages; ` +
        `RSS ${mb(baseline)} MB before, ${mb(peak)} MB at the peak, ${mb(after)} MB after`);
      assert.ok(counts.ws + counts.polling > 20, 'the fuzzers ran');
      assert.ok(percentile(latencies, 99) < 2000, `the pair's p99 stays low: ${percentile(latencies, 99)} ms`);
      const c = await connectClient(server, { user: uid('after') });
      assertOk(await emitAck(c.socket, 'room:join', { roomName: room }), 'a new client joins');
      for (const s of [a, b, c.socket]) s.disconnect();
    });
  });
}
