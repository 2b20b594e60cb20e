// Slow consumers (REALTIME_WRITE_TIMEOUT, REALTIME_MAX_BUFFER): a client that stops reading its TCP socket
// in a busy room is closed with a logged reason and a metric, and the room's other members keep their
// delivery latency. Run against SQLite and PostgreSQL.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, assertOk,
  show, uid, join, http, API_KEY, listOf, eventually, sleep,
} from './harness.mjs';

noteSkips();

const MEMBERS = 20;
const RATE = 200; // messages a second
const SIZE = 1000; // bytes of content
const WRITE_TIMEOUT = 2000;

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : NaN;
}

async function metric(server, name) {
  const r = await http(server, 'GET', '/metrics');
  const line = String(r.body).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

for (const backend of backends()) {
  describe(`slow consumer: ${MEMBERS} members, ${RATE} messages/s of ${SIZE} B, REALTIME_WRITE_TIMEOUT=${WRITE_TIMEOUT} [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({
        backend: backend.name,
        env: {
          REALTIME_WRITE_TIMEOUT: String(WRITE_TIMEOUT), REALTIME_RATE_LIMIT_POINTS: '1000000',
          // the heartbeat must not be what closes the slow member
          REALTIME_PING_INTERVAL: '120000', REALTIME_PING_TIMEOUT: '120000',
        },
      });
    });
    after(() => shutdown(server));

    it('a member that stops reading is closed (logged, counted); the others get every message and their p99 stays low', async () => {
      const room = uid('busy');
      const members = [];
      for (let i = 0; i < MEMBERS; i++) {
        const c = await connectClient(server, { user: uid(`m${i}`) });
        await join(c.socket, room);
        members.push(c.socket);
      }
      const publisher = (await connectClient(server, { user: uid('pub') })).socket;
      await join(publisher, room);
      const slow = (await connectClient(server, { user: uid('slow') })).socket;
      await join(slow, room);
      const slowId = slow.id;

      // Latencies of the messages sent before the slow member stops reading (the baseline), and after.
      const baseline = [];
      const latencies = [];
      let pausedAt = Infinity;
      const received = members.map(() => 0);
      members.forEach((s, i) => s.on('message:new', (m) => {
        const sent = Number(String(m.content).split('|')[0]);
        (sent < pausedAt ? baseline : latencies).push(Date.now() - sent);
        received[i]++;
      }));

      let sent = 0;
      let acked = 0;
      let failed = 0;
      let closedAfter = null;
      const padding = 'x'.repeat(SIZE - 14);
      const timer = setInterval(() => {
        for (let i = 0; i < RATE / 20; i++) {
          sent++;
          publisher.emit('message:send', { roomName: room, content: `${Date.now()}|${padding}` }, (ack) => {
            if (ack && ack.success) acked++; else failed++;
          });
        }
      }, 50);
      // Three seconds of traffic with every member reading, then the slow member stops reading its TCP
      // socket (the server's writes fill the kernel's buffers, then stall). The ws library resumes a socket
      // it paused itself: this one stays paused.
      await sleep(3000);
      const tcp = slow.io.engine.transport.ws._socket;
      tcp.pause();
      tcp.resume = () => tcp;
      pausedAt = Date.now();
      try {
        await eventually('the server to close the member that stopped reading', async () => {
          const conns = listOf((await http(server, 'GET', '/api/connections', { apiKey: API_KEY })).body, 'connections');
          if (conns.some((c) => c.socketId === slowId)) return false;
          closedAfter = Date.now() - pausedAt;
          return true;
        }, { timeoutMs: 60_000, intervalMs: 250 });
        // two more seconds of traffic with the slow member gone
        await sleep(2000);
      } finally {
        clearInterval(timer);
      }
      await eventually('every send to be acknowledged', () => acked + failed === sent, { timeoutMs: 30_000 });
      assert.equal(failed, 0, `every send is acknowledged ok (${failed} of ${sent} failed)`);
      await eventually('every member to receive every message', () => received.every((n) => n === acked), { timeoutMs: 30_000 });

      latencies.sort((a, b) => a - b);
      baseline.sort((a, b) => a - b);
      const p50 = percentile(latencies, 50);
      const p99 = percentile(latencies, 99);
      console.log(`slow consumer [${backend.name}]: closed ${closedAfter} ms after it stopped reading; ${sent} messages, ` +
        `${baseline.length + latencies.length} deliveries to ${MEMBERS} members; before it stopped: p50 ${percentile(baseline, 50)} ms, ` +
        `p99 ${percentile(baseline, 99)} ms; after: p50 ${p50} ms, p99 ${p99} ms, max ${latencies[latencies.length - 1]} ms`);
      assert.ok(closedAfter >= WRITE_TIMEOUT, `closed only after the write timeout (${closedAfter} ms)`);
      // Loose on purpose (a debug build on 2 shared cores, its 22 clients in one node process, other test files
      // beside it): it fails when the stalled member holds the room up, which lasts the ~17 s of the stall.
      assert.ok(p99 < 5000, `the other members' p99 stays low: ${p99} ms (p50 ${p50} ms; before: p99 ${percentile(baseline, 99)} ms)`);
      assert.ok(members.every((s) => s.connected), 'every other member is still connected');
      assert.ok(server.output.includes('slow consumer'), 'the close is logged with its reason');
      assert.ok((await metric(server, 'realtime_slow_consumers_total')) >= 1, 'and counted in /metrics');
      const still = await emitAck(members[0], 'message:send', { roomName: room, content: `${Date.now()}|after` });
      assertOk(still, 'the room still works');
      delete tcp.resume;
      tcp.resume();
      for (const s of [...members, publisher, slow]) s.disconnect();
    });
  });
}
