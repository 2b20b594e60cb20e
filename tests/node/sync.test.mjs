// docs/protocol.md §6: sync:messages / sync:channels, and messages surviving a server restart.
// Run against SQLite and PostgreSQL.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, assertOk, assertErr, assertIso, show, uid, join, sleep,
  sql, eventually, http, listOf, API_KEY,
} from './harness.mjs';

noteSkips();

function checkSyncMessage(m, channelId) {
  const ctx = show(m);
  assert.equal(typeof m.id, 'string', `id: ${ctx}`);
  assert.equal(m.channelId, channelId, `channelId: ${ctx}`);
  assert.equal(typeof m.content, 'string', `content: ${ctx}`);
  assert.equal(typeof m.userId, 'string', `userId: ${ctx}`);
  assertIso(m.createdAt, 'sync message createdAt');
  assert.equal(typeof m.type, 'string', `type: ${ctx}`);
  assert.ok(Number.isInteger(m.seq), `seq: ${ctx}`);
  assert.equal(typeof m.isEdited, 'boolean', `isEdited: ${ctx}`);
  assert.equal(typeof m.isDeleted, 'boolean', `isDeleted: ${ctx}`);
}

function checkAscending(msgs) {
  for (let i = 1; i < msgs.length; i++) {
    assert.ok(msgs[i].seq > msgs[i - 1].seq, `messages must be ascending by seq: ${show(msgs.map((m) => m.seq))}`);
  }
}

async function sync(socket, payload) {
  const data = assertOk(await emitAck(socket, 'sync:messages', payload), `sync:messages ${show(payload)}`);
  assert.ok(data && Array.isArray(data.messages), `sync data.messages: ${show(data)}`);
  assert.equal(typeof data.hasMore, 'boolean', `sync data.hasMore: ${show(data)}`);
  assert.ok(Number.isInteger(data.serverTime), `sync data.serverTime must be epoch ms: ${show(data)}`);
  return data;
}

// the two backends' suites run side by side (each has its own server); inside one backend the tests run
// one at a time (children inherit the parent's concurrency, and a restart would cut another test's clients)
describe('sync', { concurrency: 2 }, () => {
for (const backend of backends()) {
  describe(`sync [${backend.name}]`, { skip: backend.skip, concurrency: 1 }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name });
    });
    after(() => shutdown(server));

    it('sync:messages pages ascending by seq with hasMore; since=serverTime returns only newer, edits and deletes', async () => {
      const channelId = uid('chan');
      const room = `channel:${channelId}`;
      const a = await connectClient(server, { user: uid('alice') });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      const sent = [];
      for (let i = 0; i < 5; i++) {
        sent.push(assertOk(await emitAck(a.socket, 'message:send', { channelId, content: `m${i}`, type: 'text', clientMessageId: uid('c') }), 'send'));
      }
      await sleep(30);

      const p1 = await sync(b.socket, { channelId, since: null, limit: 3 });
      assert.equal(p1.messages.length, 3, `first page: ${show(p1)}`);
      assert.deepEqual(p1.messages.map((m) => m.id), sent.slice(0, 3).map((s) => s.messageId), `the OLDEST 3 first: ${show(p1.messages)}`);
      assert.equal(p1.hasMore, true, `hasMore with 5 messages and limit 3: ${show(p1)}`);
      p1.messages.forEach((m) => checkSyncMessage(m, channelId));
      checkAscending(p1.messages);
      assert.deepEqual(p1.messages.map((m) => m.content), ['m0', 'm1', 'm2']);
      assert.ok(Math.abs(p1.serverTime - Date.now()) < 60_000, `serverTime should be epoch ms now-ish: ${show(p1.serverTime)}`);

      const p2 = await sync(b.socket, { channelId, since: null, limit: 3, afterSeq: p1.messages[2].seq });
      assert.deepEqual(p2.messages.map((m) => m.id), sent.slice(3).map((s) => s.messageId), `page after seq ${p1.messages[2].seq}: ${show(p2.messages)}`);
      assert.equal(p2.hasMore, false, show(p2));

      const all = await sync(b.socket, { channelId, since: null, limit: 100 });
      assert.equal(all.messages.length, 5, show(all));
      assert.equal(all.hasMore, false, show(all));
      const T = all.serverTime;
      await sleep(30);

      // after T: one new message, one edit, one delete
      const fresh = assertOk(await emitAck(a.socket, 'message:send', { channelId, content: 'fresh', type: 'text', clientMessageId: uid('c') }), 'send fresh');
      assertOk(await emitAck(a.socket, 'message:edit', { messageId: sent[1].messageId, content: 'm1 edited' }), 'edit');
      assertOk(await emitAck(a.socket, 'message:delete', { messageId: sent[2].messageId }), 'delete');

      const d = await sync(b.socket, { channelId, since: T, limit: 100 });
      const ids = d.messages.map((m) => m.id);
      assert.ok(ids.includes(fresh.messageId), `new message after since missing: ${show(d.messages)}`);
      const edited = d.messages.find((m) => m.id === sent[1].messageId);
      assert.ok(edited, `edited message after since missing: ${show(d.messages)}`);
      assert.equal(edited.content, 'm1 edited', show(edited));
      assert.equal(edited.isEdited, true, show(edited));
      const deleted = d.messages.find((m) => m.id === sent[2].messageId);
      assert.ok(deleted, `deleted message after since missing: ${show(d.messages)}`);
      assert.equal(deleted.isDeleted, true, show(deleted));
      for (const untouched of [sent[0], sent[3], sent[4]]) {
        assert.ok(!ids.includes(untouched.messageId), `unchanged message ${untouched.messageId} from before since must not be returned: ${show(d.messages)}`);
      }
      checkAscending(d.messages);
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('no gaps: repeated since=serverTime syncs during a burst of sends miss nothing', async () => {
      const channelId = uid('burst');
      const a = await connectClient(server, { user: uid('alice') });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, `channel:${channelId}`);
      await join(b.socket, `channel:${channelId}`);
      const seen = new Set();
      let since = null;
      let sending = true;
      const poller = (async () => {
        while (sending) {
          const d = await sync(b.socket, { channelId, since, limit: 1000 });
          assert.equal(d.hasMore, false, 'limit 1000 covers the burst');
          d.messages.forEach((m) => seen.add(m.id));
          since = d.serverTime;
          await sleep(5);
        }
      })();
      const acks = await Promise.all(
        Array.from({ length: 60 }, (_, i) => emitAck(a.socket, 'message:send', { channelId, content: `b${i}`, type: 'text', clientMessageId: uid('c') }, 10_000)),
      );
      sending = false;
      await poller;
      const last = await sync(b.socket, { channelId, since, limit: 1000 });
      last.messages.forEach((m) => seen.add(m.id));
      const ids = acks.map((x) => assertOk(x, 'burst send').messageId);
      const missing = ids.filter((id) => !seen.has(id));
      assert.deepEqual(missing, [], `messages skipped by since-based sync: ${missing.length} of ${ids.length}`);
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('sync:messages accepts the room name of a channel room, and the name of a bare room', async () => {
      const channelId = uid('chan');
      const bare = uid('bare');
      const { socket } = await connectClient(server, { user: uid('alice') });
      await join(socket, `channel:${channelId}`);
      await join(socket, bare);
      const d1 = assertOk(await emitAck(socket, 'message:send', { roomName: `channel:${channelId}`, content: 'c' }), 'send');
      const d2 = assertOk(await emitAck(socket, 'message:send', { roomName: bare, content: 'b' }), 'send');
      const s1 = await sync(socket, { channelId: `channel:${channelId}`, since: null, limit: 10 });
      assert.deepEqual(s1.messages.map((m) => m.id), [d1.messageId], show(s1));
      const s2 = await sync(socket, { channelId: bare, since: null, limit: 10 });
      assert.deepEqual(s2.messages.map((m) => m.id), [d2.messageId], show(s2));
      socket.disconnect();
    });

    it('sync:messages by a non-member → error', async () => {
      const channelId = uid('chan');
      const a = await connectClient(server, { user: uid('alice') });
      await join(a.socket, `channel:${channelId}`);
      assertOk(await emitAck(a.socket, 'message:send', { channelId, content: 'secret', type: 'text', clientMessageId: uid('c') }), 'send');
      const c = await connectClient(server, { user: uid('carol') });
      const ack = await emitAck(c.socket, 'sync:messages', { channelId, since: null, limit: 10 });
      assertErr(ack, 'NOT_A_MEMBER', 'sync:messages by a non-member');
      a.socket.disconnect();
      c.socket.disconnect();
    });

    it('sync:channels lists the user\'s rooms with id, name, type, memberCount and serverTime', async () => {
      const channelId = uid('chan');
      const bare = uid('bare');
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, `channel:${channelId}`);
      await join(b.socket, `channel:${channelId}`);
      await join(a.socket, bare);
      const bobsOwn = uid('bobs-own'); // a room alice is not in must not be listed for her
      await join(b.socket, bobsOwn);
      assertOk(await emitAck(a.socket, 'message:send', { channelId, content: 'x', type: 'text', clientMessageId: uid('c') }), 'send');

      const data = assertOk(await emitAck(a.socket, 'sync:channels', { since: null }), 'sync:channels');
      assert.ok(data && Array.isArray(data.channels), show(data));
      assert.ok(Number.isInteger(data.serverTime), `serverTime: ${show(data)}`);
      const ch = data.channels.find((c) => c.name === `channel:${channelId}`);
      assert.ok(ch, `channel:${channelId} missing from sync:channels: ${show(data)}`);
      assert.equal(ch.id, channelId, `id is the bare id for channel rooms: ${show(ch)}`);
      assert.equal(ch.type, 'channel', show(ch));
      assert.equal(ch.memberCount, 2, show(ch));
      assertIso(ch.lastMessageAt, 'lastMessageAt of a room with a message');
      assert.equal(ch.unreadCount, 0, `alice's own message is not unread for her: ${show(ch)}`);
      const br = data.channels.find((c) => c.name === bare);
      assert.ok(br, `${bare} missing from sync:channels: ${show(data)}`);
      assert.equal(br.id, bare, `id is the room name for non-channel rooms: ${show(br)}`);
      assert.equal(br.memberCount, 1, show(br));
      assert.equal(br.lastMessageAt, undefined, `a room without messages has no lastMessageAt: ${show(br)}`);
      // exactly alice's rooms, sorted by name: not bob's room, nothing else
      assert.deepEqual(data.channels.map((c) => c.name), [`channel:${channelId}`, bare].sort(),
        `sync:channels must list exactly alice's rooms, sorted by name: ${show(data.channels)}`);
      const bobs = assertOk(await emitAck(b.socket, 'sync:channels', {}), 'sync:channels (bob)');
      assert.ok(bobs.channels.some((c) => c.name === bobsOwn), `bob's own room is listed for him: ${show(bobs)}`);
      const bobsChan = bobs.channels.find((c) => c.name === `channel:${channelId}`);
      assert.equal(bobsChan && bobsChan.unreadCount, 1, `alice's message is unread for bob: ${show(bobsChan)}`);
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('messages acked before a restart are returned by sync:messages after it; seq keeps increasing', async () => {
      const channelId = uid('chan');
      const alice = uid('alice');
      const bob = uid('bob');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: bob });
      await join(a.socket, `channel:${channelId}`);
      await join(b.socket, `channel:${channelId}`);
      const sent = [];
      for (let i = 0; i < 3; i++) {
        sent.push(assertOk(await emitAck(a.socket, 'message:send', { channelId, content: `before-restart-${i}`, type: 'text', clientMessageId: `cm-${i}` }), 'send'));
      }

      await server.restart();

      const b2 = await connectClient(server, { user: bob });
      assert.ok(b2.authenticated.rooms.includes(`channel:${channelId}`), `membership survives the restart: ${show(b2.authenticated)}`);
      const d = await sync(b2.socket, { channelId, since: null, limit: 50 });
      assert.deepEqual(d.messages.map((m) => m.id), sent.map((s) => s.messageId), `messages after restart: ${show(d.messages)}`);
      assert.deepEqual(d.messages.map((m) => m.seq), sent.map((s) => s.seq), show(d.messages));

      const a2 = await connectClient(server, { user: alice });
      // idempotency survives the restart too
      const retry = assertOk(await emitAck(a2.socket, 'message:send', { channelId, content: 'before-restart-2', type: 'text', clientMessageId: 'cm-2' }), 'retry after restart');
      assert.equal(retry.messageId, sent[2].messageId, `retry after restart must ack the original messageId: ${show(retry)}`);
      const next = assertOk(await emitAck(a2.socket, 'message:send', { channelId, content: 'after-restart', type: 'text', clientMessageId: 'cm-3' }), 'send after restart');
      assert.ok(next.seq > sent[2].seq, `seq after restart must be greater: before=${sent[2].seq} after=${next.seq}`);
      a2.socket.disconnect();
      b2.socket.disconnect();
    });
  });

  describe(`retention [${backend.name}] (REALTIME_MESSAGE_RETENTION_DAYS=2, REALTIME_EVENT_RETENTION_DAYS=2, REALTIME_RETENTION_INTERVAL=1)`, { skip: backend.skip, concurrency: 1 }, () => {
    let server;
    before(async () => {
      server = await startServer({
        backend: backend.name,
        env: { REALTIME_MESSAGE_RETENTION_DAYS: '2', REALTIME_EVENT_RETENTION_DAYS: '2', REALTIME_RETENTION_INTERVAL: '1' },
      });
    });
    after(() => shutdown(server));

    it('messages and audit events past their retention are deleted (the pass runs at start); the rest stays', async () => {
      const channelId = uid('chan');
      const alice = uid('alice');
      const bob = uid('bob');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: bob });
      await join(a.socket, `channel:${channelId}`);
      await join(b.socket, `channel:${channelId}`);
      const sent = [];
      for (const content of ['old-1', 'old-2', 'fresh']) {
        sent.push(assertOk(await emitAck(a.socket, 'message:send', { channelId, content, type: 'text', clientMessageId: uid('c') }), 'send'));
      }
      assertOk(await emitAck(b.socket, 'reaction:add', { messageId: sent[0].messageId, emoji: '👍' }), 'reaction on an old message');
      a.socket.disconnect();
      await eventually('alice\'s audit events', async () => {
        const evs = listOf((await http(server, 'GET', '/api/events?limit=1000', { apiKey: API_KEY })).body, 'events');
        return evs.filter((e) => e.userId === alice).length >= 2;
      });
      b.socket.disconnect();
      await server.stop();

      // three days back: past the 2-day retention
      const back = 3 * 86_400_000;
      const old = sent.slice(0, 2).map((x) => `'${x.messageId}'`).join(',');
      sql(server, `UPDATE np_realtime_messages SET created_at = created_at - ${back}, updated_at = updated_at - ${back} WHERE id IN (${old})`);
      sql(server, `UPDATE np_realtime_events SET created_at = created_at - ${back} WHERE user_id = '${alice}'`);
      // one day back: inside the retention
      sql(server, `UPDATE np_realtime_events SET created_at = created_at - 86400000 WHERE user_id = '${bob}'`);
      await server.start();

      const b2 = await connectClient(server, { user: bob });
      const kept = await eventually('the retention pass to remove the two old messages', async () => {
        const d = await sync(b2.socket, { channelId, since: null, limit: 100 });
        return d.messages.length === 1 ? d.messages : { done: false, messages: d.messages.map((m) => m.content) };
      });
      assert.deepEqual(kept.map((m) => m.id), [sent[2].messageId], `only the fresh message is kept: ${show(kept)}`);
      assert.equal(sql(server, `SELECT count(*) FROM np_realtime_reactions WHERE message_id = '${sent[0].messageId}'`), '0', 'reactions go with their message');
      const evs = listOf((await http(server, 'GET', '/api/events?limit=1000', { apiKey: API_KEY })).body, 'events');
      assert.deepEqual(evs.filter((e) => e.userId === alice), [], `alice's 3-day-old audit events are gone: ${show(evs.filter((e) => e.userId === alice))}`);
      assert.ok(evs.filter((e) => e.userId === bob).length >= 2, `bob's 1-day-old audit events stay: ${show(evs)}`);
      // seq goes on from where it was: the room remembers its last seq
      const a2 = await connectClient(server, { user: alice });
      const next = assertOk(await emitAck(a2.socket, 'message:send', { channelId, content: 'after', type: 'text', clientMessageId: uid('c') }), 'send');
      assert.equal(next.seq, 4, show(next));
      a2.socket.disconnect();
      b2.socket.disconnect();
    });

    it('the periodic pass removes what ages past the retention while the server runs', async () => {
      const channelId = uid('chan');
      const a = await connectClient(server, { user: uid('alice') });
      await join(a.socket, `channel:${channelId}`);
      const sent = [];
      for (const content of ['ages', 'stays']) {
        sent.push(assertOk(await emitAck(a.socket, 'message:send', { channelId, content, type: 'text', clientMessageId: uid('c') }), 'send'));
      }
      sql(server, `UPDATE np_realtime_messages SET created_at = created_at - ${3 * 86_400_000} WHERE id = '${sent[0].messageId}'`);
      const kept = await eventually('a retention pass (every second here) to remove the aged message', async () => {
        const d = await sync(a.socket, { channelId, since: null, limit: 100 });
        return d.messages.length === 1 ? d.messages : { done: false, messages: d.messages.map((m) => m.content) };
      });
      assert.deepEqual(kept.map((m) => m.id), [sent[1].messageId], show(kept));
      a.socket.disconnect();
    });
  });
}
});
