// Floods: one user sending 5,000 events a second (far past the per-user budget) while two other users talk
// in another room; their delivery latency is measured before and during the flood. Run against SQLite and
// PostgreSQL.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, assertOk,
  uid, join, eventually, sleep, mintToken,
} from './harness.mjs';

const FLOODER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'flooder.mjs');

/** Starts the flooder process; resolves {joined: Promise, result: Promise<counts>}. */
function startFlooder(server, room) {
  const child = spawn(process.execPath, [FLOODER, server.url, mintToken(uid('flood')), room, String(FLOOD_RATE), String(PHASE_MS)]);
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const joined = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('joined\n')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`flooder exited (${code}) before joining: ${err}`)));
  });
  const result = new Promise((resolve, reject) => {
    child.on('exit', (code) => {
      const last = out.trim().split('\n').pop();
      if (code === 0) resolve(JSON.parse(last));
      else reject(new Error(`flooder exited with ${code}: ${err}`));
    });
  });
  return { joined, result, child };
}

noteSkips();

const FLOOD_RATE = 5000; // events a second
const PHASE_MS = 4000;

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : NaN;
}

for (const backend of backends()) {
  describe(`flood: one user at ${FLOOD_RATE} events/s [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name });
    });
    after(() => shutdown(server));

    it('another user\'s delivery p99 barely moves; the flooder is refused RATE_LIMITED past its budget', async () => {
      const room = uid('quiet');
      const a = (await connectClient(server, { user: uid('a') })).socket;
      const b = (await connectClient(server, { user: uid('b') })).socket;
      await join(a, room);
      await join(b, room);
      const flooder = startFlooder(server, uid('loud'));
      await flooder.joined;
      let phase = 'baseline';
      const lat = { baseline: [], flood: [] };
      let got = 0;
      b.on('message:new', (m) => {
        const [p, sent] = String(m.content).split('|');
        if (lat[p]) lat[p].push(Date.now() - Number(sent));
        got++;
      });
      let sent = 0;
      const talk = setInterval(() => {
        sent++;
        a.emit('message:send', { roomName: room, content: `${phase}|${Date.now()}` });
      }, 50);

      let acks;
      try {
        await sleep(PHASE_MS);
        phase = 'flood';
        flooder.child.stdin.write('go\n');
        // the flooder started its clock when it joined; it sends for PHASE_MS from then
        acks = await Promise.race([
          flooder.result,
          sleep(60_000).then(() => { throw new Error('the flooder did not get its acks within 60 s'); }),
        ]);
      } finally {
        clearInterval(talk);
        flooder.child.kill();
      }
      const flooded = acks.sent;
      const floodSeconds = PHASE_MS / 1000;
      await eventually('b to receive every message of a', () => got === sent, { timeoutMs: 30_000 });
      const base = lat.baseline.sort((x, y) => x - y);
      const during = lat.flood.sort((x, y) => x - y);
      const summary = `flood [${backend.name}]: ${flooded} events in ${floodSeconds} s (${Math.round(flooded / floodSeconds)}/s): ` +
        `${acks.ok} accepted, ${acks.limited} RATE_LIMITED, ${acks.other} other; the other user's latency before: ` +
        `p50 ${percentile(base, 50)} ms, p99 ${percentile(base, 99)} ms (${base.length} messages); during: ` +
        `p50 ${percentile(during, 50)} ms, p99 ${percentile(during, 99)} ms (${during.length} messages)`;
      console.log(summary);
      assert.ok(flooded >= FLOOD_RATE * floodSeconds * 0.8, `the flood reached its rate: ${summary}`);
      // the budget: 600 a minute, refilling 10 a second
      assert.ok(acks.limited > 0 && acks.ok <= 600 + 10 * (floodSeconds * 2 + 2), `past the budget the flooder is refused: ${summary}`);
      assert.equal(acks.other, 0, summary);
      // The bound is loose on purpose: this is a debug build sharing 2 cores with its clients and with the other
      // test files (measured: +20 ms alone, up to +900 ms beside other heavy files). It fails when the flood
      // holds the server up (events queued behind the flood, a blocked fan-out), which adds seconds.
      assert.ok(percentile(during, 99) <= percentile(base, 99) + 3000, `the other user's p99 stays within 3 s of its baseline: ${summary}`);
      assertOk(await emitAck(b, 'message:send', { roomName: room, content: `after|${Date.now()}` }), 'the room still works');
      for (const s of [a, b]) s.disconnect();
    });
  });
}
