// Issue 2 §8 / CONTRACT §5: graceful shutdown on SIGTERM with connected clients; nothing acked is lost.
// Run against SQLite and PostgreSQL.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  backends, noteSkips, startServer, connectClient, emitAck, waitFor, waitDisconnect, assertOk, show, uid, join, http, API_KEY,
} from './harness.mjs';

noteSkips();

for (const backend of backends()) {
  describe(`graceful shutdown [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    after(async () => {
      if (server) await server.cleanup();
    });

    it('SIGTERM with connected clients → exit 0 within a few seconds; a message acked just before survives', async () => {
      server = await startServer({ backend: backend.name });
      const channelId = uid('chan');
      const alice = uid('alice');
      const bob = uid('bob');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: bob, transports: ['polling'] });
      await join(a.socket, `channel:${channelId}`);
      await join(b.socket, `channel:${channelId}`);
      const acked = [];
      for (let i = 0; i < 5; i++) {
        acked.push(assertOk(await emitAck(a.socket, 'message:send', { channelId, content: `pre-${i}`, type: 'text', clientMessageId: uid('c') }), 'send'));
      }
      const last = assertOk(await emitAck(a.socket, 'message:send', { channelId, content: 'last-before-sigterm', type: 'text', clientMessageId: uid('c') }), 'send');
      acked.push(last);

      const ga = waitDisconnect(a.socket, 8000);
      const gb = waitDisconnect(b.socket, 8000);
      const t0 = Date.now();
      const exit = await server.stop({ closeClientsFirst: false, assertExit: false, timeoutMs: 8000 });
      const took = Date.now() - t0;
      assert.equal(exit.code, 0, `exit after SIGTERM: ${show(exit)} after ${took} ms\n--- server output ---\n${server.logs(3000)}`);
      assert.ok(took < 5000, `shutdown took ${took} ms (expected a few seconds at most)`);
      await ga;
      await gb;

      await server.start();
      // the sessions cut by the shutdown ended then: last seen is the shutdown, not an older session's
      const seen = await http(server, 'GET', `/api/users/${encodeURIComponent(alice)}/presence`, { apiKey: API_KEY });
      const lastSeen = Date.parse(seen.body && seen.body.presence && seen.body.presence.lastSeen);
      assert.ok(lastSeen >= t0 - 1000 && lastSeen <= Date.now(), `alice's lastSeen after the restart: ${show(seen.body)} (stopped at ${new Date(t0).toISOString()})`);
      const b2 = await connectClient(server, { user: bob });
      const d = assertOk(await emitAck(b2.socket, 'sync:messages', { channelId, since: null, limit: 100 }), 'sync after restart');
      const ids = d.messages.map((m) => m.id);
      for (const s of acked) assert.ok(ids.includes(s.messageId), `acked message ${s.messageId} lost across SIGTERM: ${show(d.messages)}`);

      // and the restarted server works normally
      const a2 = await connectClient(server, { user: alice });
      const got = waitFor(b2.socket, 'message:new', (m) => m && m.content === 'after-restart');
      assertOk(await emitAck(a2.socket, 'message:send', { channelId, content: 'after-restart', type: 'text', clientMessageId: uid('c') }), 'send after restart');
      await got;
      const exit2 = await server.stop({ assertExit: false });
      assert.equal(exit2.code, 0, `second SIGTERM: ${show(exit2)}`);
    });
  });
}

describe('graceful shutdown with an Engine.IO session that never connected to the namespace', () => {
  let server;
  after(async () => {
    if (server) await server.cleanup();
  });

  it('its open long-poll is answered with a close packet and does not hold the exit', async () => {
    server = await startServer();
    const base = `${server.url}/socket.io/?EIO=4&transport=polling`;
    const open = await (await fetch(base)).text();
    const { sid } = JSON.parse(open.slice(1));
    // the first poll may return a queued packet at once; the second one waits for the server
    await (await fetch(`${base}&sid=${sid}`)).text();
    const poll = fetch(`${base}&sid=${sid}`).then((r) => r.text(), (e) => `error: ${e.message}`);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    const exit = await server.stop({ closeClientsFirst: false, assertExit: false, timeoutMs: 8000 });
    const took = Date.now() - t0;
    assert.equal(exit.code, 0, `exit after SIGTERM: ${show(exit)} after ${took} ms\n${server.logs(2000)}`);
    assert.ok(took < 3000, `an idle long-poll held shutdown for ${took} ms`);
    assert.equal(await poll, '1', 'the poll is answered with Engine.IO close, so the client reconnects');
  });
});
