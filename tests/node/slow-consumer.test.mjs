// Slow consumers (REALTIME_WRITE_TIMEOUT, REALTIME_MAX_BUFFER): a client that stops reading its TCP socket
// in a busy room is closed with a logged reason and a metric, and the room's other members keep their
// delivery latency. Run against SQLite and PostgreSQL.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
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

/** `n` new users (`prefix` + index) connected and in `room`; their sockets. */
async function inRoom(server, room, n, prefix, opts = {}) {
  const sockets = [];
  for (let i = 0; i < n; i++) {
    const { socket } = await connectClient(server, { user: uid(n === 1 ? prefix : `${prefix}${i}`), ...opts });
    await join(socket, room);
    sockets.push(socket);
  }
  return sockets;
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
      const members = await inRoom(server, room, MEMBERS, 'm');
      const [publisher] = await inRoom(server, room, 1, 'pub');
      const [slow] = await inRoom(server, room, 1, 'slow');
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
      let firstFailure;
      let closedAfter = null;
      const padding = 'x'.repeat(SIZE - 14);
      const timer = setInterval(() => {
        for (let i = 0; i < RATE / 20; i++) {
          sent++;
          publisher.emit('message:send', { roomName: room, content: `${Date.now()}|${padding}` }, (ack) => {
            if (ack && ack.success) acked++; else { failed++; firstFailure ??= ack; }
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
      assert.equal(failed, 0, `every send is acknowledged ok (${failed} of ${sent} failed, the first with ${show(firstFailure)})`);
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

// The byte bound (REALTIME_MAX_BUFFER_BYTES): members that stop reading in a room of large messages are closed
// once more than the bound waits for them, long before the write timeout or the heartbeat would notice, and
// the server's memory for them stays bounded.
const BIG = 15_000; // bytes of content (REALTIME_MAX_MESSAGE_LENGTH is 16,000)
const BIG_RATE = 50; // messages a second
const PAUSED = 5;
const MAX_BYTES = 1_048_576; // the default
const LONG_WRITE_TIMEOUT = 60_000;

function rssBytes(server) {
  const status = readFileSync(`/proc/${server.proc.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

for (const backend of backends()) {
  describe(`slow consumer past REALTIME_MAX_BUFFER_BYTES=${MAX_BYTES}: ${MEMBERS} members, ${PAUSED} stop reading, ${BIG_RATE} messages/s of ${BIG} B [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({
        backend: backend.name,
        env: {
          REALTIME_MAX_BUFFER_BYTES: String(MAX_BYTES), REALTIME_RATE_LIMIT_POINTS: '1000000',
          // neither the write timeout nor the heartbeat may be what closes the members that stop reading
          REALTIME_WRITE_TIMEOUT: String(LONG_WRITE_TIMEOUT),
          REALTIME_PING_INTERVAL: '120000', REALTIME_PING_TIMEOUT: '120000',
        },
      });
    });
    after(() => shutdown(server));

    it('the members that stop reading are closed by the byte bound (logged, counted, memory bounded); the others get every message', async () => {
      const room = uid('big');
      const members = await inRoom(server, room, MEMBERS, 'm');
      const [publisher] = await inRoom(server, room, 1, 'pub');
      const slow = await inRoom(server, room, PAUSED, 'slow');
      const slowIds = new Set(slow.map((s) => s.id));
      const dropped = [];
      for (const s of [publisher, ...members]) s.on('disconnect', (reason) => dropped.push(reason));
      const received = members.map(() => 0);
      const baseline = [];
      const latencies = [];
      let pausedAt = Infinity;
      members.forEach((s, i) => s.on('message:new', (m) => {
        const sentAt = Number(String(m.content).split('|')[0]);
        (sentAt < pausedAt ? baseline : latencies).push(Date.now() - sentAt);
        received[i]++;
      }));

      let sent = 0;
      let acked = 0;
      let failed = 0;
      let firstFailure;
      const padding = 'x'.repeat(BIG - 14);
      const timer = setInterval(() => {
        for (let i = 0; i < BIG_RATE / 10; i++) {
          sent++;
          publisher.emit('message:send', { roomName: room, content: `${Date.now()}|${padding}` }, (ack) => {
            if (ack && ack.success) acked++; else { failed++; firstFailure ??= ack; }
          });
        }
      }, 100);
      let closedAfter = null;
      let rssBefore;
      let rssMax = 0;
      let sentWhilePaused = 0;
      try {
        // Three seconds with every member reading (the server's memory settles), then the slow members stop
        // reading their TCP sockets for good.
        await sleep(3000);
        rssBefore = rssBytes(server);
        const tcps = slow.map((s) => s.io.engine.transport.ws._socket);
        for (const tcp of tcps) {
          tcp.pause();
          tcp.resume = () => tcp;
        }
        pausedAt = Date.now();
        const sentAtPause = sent;
        await eventually('the server to close every member that stopped reading', async () => {
          rssMax = Math.max(rssMax, rssBytes(server));
          const conns = listOf((await http(server, 'GET', '/api/connections', { apiKey: API_KEY })).body, 'connections');
          if (conns.some((c) => slowIds.has(c.socketId))) return false;
          closedAfter = Date.now() - pausedAt;
          sentWhilePaused = sent - sentAtPause;
          return true;
        }, { timeoutMs: LONG_WRITE_TIMEOUT, intervalMs: 250 });
        // two more seconds of traffic with the slow members gone
        for (let i = 0; i < 8; i++) {
          await sleep(250);
          rssMax = Math.max(rssMax, rssBytes(server));
        }
      } finally {
        clearInterval(timer);
      }
      assert.deepEqual(dropped, [], 'no reading member (nor the publisher) is disconnected');
      await eventually('every send to be acknowledged', () => acked + failed === sent, { timeoutMs: 30_000 });
      assert.equal(failed, 0, `every send is acknowledged ok (${failed} of ${sent} failed, the first with ${show(firstFailure)})`);
      await eventually('every member to receive every message', () => received.every((n) => n === acked), { timeoutMs: 30_000 });

      const growth = rssMax - rssBefore;
      const heldWithoutBound = sentWhilePaused * BIG;
      latencies.sort((a, b) => a - b);
      baseline.sort((a, b) => a - b);
      const p99 = percentile(latencies, 99);
      console.log(`slow consumers past the byte bound [${backend.name}]: ${PAUSED} closed ${closedAfter} ms after they stopped reading; ` +
        `${sentWhilePaused} messages (${(heldWithoutBound / 1048576).toFixed(1)} MiB) sent meanwhile; ` +
        `server RSS ${(rssBefore / 1048576).toFixed(1)} MiB before, at most +${(growth / 1048576).toFixed(1)} MiB after; ` +
        `the others' latency before: p50 ${percentile(baseline, 50)} ms, p99 ${percentile(baseline, 99)} ms; ` +
        `after: p50 ${percentile(latencies, 50)} ms, p99 ${p99} ms`);
      // Loose on purpose, as above: it fails when the stalled members hold the room up.
      assert.ok(p99 < 5000, `the other members' p99 stays low: ${p99} ms (before: ${percentile(baseline, 99)} ms)`);
      // The heartbeat (120 s) and the write timeout (60 s) cannot have closed them this early.
      assert.ok(closedAfter < LONG_WRITE_TIMEOUT, `closed before the write timeout (${closedAfter} ms)`);
      // Held without the bound: every message sent until the write timeout, 60 s × 750 KB/s ≈ 43 MiB (shared by
      // the paused members); with it, each holds at most 1 MiB past the kernel's buffers.
      assert.ok(growth < 24 * 1048576, `the server's memory stays bounded: +${(growth / 1048576).toFixed(1)} MiB`);
      assert.ok(server.output.includes('REALTIME_MAX_BUFFER_BYTES'), 'the close is logged with its reason');
      assert.ok(!server.output.includes('REALTIME_WRITE_TIMEOUT)'), 'and not by the write timeout');
      assert.equal(await metric(server, 'realtime_slow_consumers_over_byte_bound_total'), PAUSED, 'counted in /metrics');
      assert.ok((await metric(server, 'realtime_slow_consumers_total')) >= PAUSED, 'as slow consumers');
      assert.ok(members.every((s) => s.connected), 'every other member is still connected');
      const still = await emitAck(members[0], 'message:send', { roomName: room, content: `${Date.now()}|after` });
      assertOk(still, 'the room still works');
      for (const s of [...members, publisher, ...slow]) s.disconnect();
    });
  });
}

// A long-polling member takes its packets off the queue with each poll: one that keeps polling is never closed
// by the byte bound, however much it receives in total.
for (const backend of backends()) {
  describe(`a long-polling member that keeps polling receives far more than REALTIME_MAX_BUFFER_BYTES [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_RATE_LIMIT_POINTS: '1000000' } });
    });
    after(() => shutdown(server));

    it('300 messages of 15 KB (4.5 MB, the bound is 1 MiB) all arrive and the member stays connected', async () => {
      const room = uid('poll');
      const [poller] = await inRoom(server, room, 1, 'poller', { transports: ['polling'] });
      const [publisher] = await inRoom(server, room, 1, 'pub');
      let received = 0;
      poller.on('message:new', () => { received++; });
      const drops = [];
      poller.on('disconnect', (reason) => drops.push(reason));
      const padding = 'x'.repeat(BIG - 14);
      for (let i = 0; i < 300; i += 5) {
        await Promise.all(Array.from({ length: 5 }, () =>
          emitAck(publisher, 'message:send', { roomName: room, content: `${Date.now()}|${padding}` }).then((a) => assertOk(a, 'send'))));
        await sleep(50);
      }
      await eventually('the poller to receive every message', () => received === 300, { timeoutMs: 30_000 });
      assert.deepEqual(drops, [], 'the poller is never disconnected');
      assert.equal(poller.io.engine.transport.name, 'polling', 'it stayed on long-polling');
      assert.equal(await metric(server, 'realtime_slow_consumers_over_byte_bound_total'), 0, 'nothing was closed by the byte bound');
      poller.disconnect();
      publisher.disconnect();
    });
  });
}
