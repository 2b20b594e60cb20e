// docs/protocol.md §7 and §7: delivery and read receipts in a 4-member room (sender + 3), batch reads,
// read receipts turned off, delivery:sync after a reconnect and after a restart, sync:channels
// unreadCount, and reactions (idempotent, counted). Run against SQLite and PostgreSQL.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, waitFor, expectNoEvent, eventsOf,
  assertOk, assertErr, assertIso, show, uid, join, sleep, http, listOf, API_KEY, holdWriteLock,
} from './harness.mjs';

noteSkips();

// ---------------------------------------------------------------------------------------------
// local helpers

/** A channel with a sender and three recipients, all persisted members. `online` picks who stays connected. */
async function room4(server, { online = [true, true, true] } = {}) {
  const channelId = uid('chan');
  const room = `channel:${channelId}`;
  const sender = uid('sender');
  const s = await connectClient(server, { user: sender });
  await join(s.socket, room);
  const recipients = [];
  for (let i = 0; i < 3; i++) {
    const userId = uid(`r${i + 1}`);
    const c = await connectClient(server, { user: userId });
    await join(c.socket, room);
    if (!online[i]) c.socket.disconnect();
    recipients.push({ userId, c: online[i] ? c : null });
  }
  // the server must have seen the offline ones go before anything is sent (a client-side disconnect
  // is asynchronous: a socket the server still holds really is pushed to)
  await waitGone(server, recipients.filter((r) => !r.c).map((r) => r.userId));
  return { channelId, room, sender, s, recipients };
}

/** Wait until the server has closed every connection of these users (GET /api/connections). */
async function waitGone(server, userIds) {
  if (userIds.length === 0) return;
  const deadline = Date.now() + 8000;
  let live = [];
  while (Date.now() < deadline) {
    const res = await http(server, 'GET', '/api/connections', { apiKey: API_KEY });
    assert.equal(res.status, 200, `GET /api/connections → ${res.status} ${show(res.body)}`);
    const list = listOf(res.body, 'connections') || [];
    live = list.filter((c) => userIds.includes(c.userId));
    if (live.length === 0) return;
    await sleep(50);
  }
  assert.fail(`the server still holds connections of disconnected users after 8 s: ${show(live)}`);
}

async function send(socket, channelId, content = uid('msg'), clientMessageId = uid('cmid')) {
  const data = assertOk(await emitAck(socket, 'message:send', { channelId, content, type: 'text', clientMessageId }), 'message:send');
  assert.equal(typeof data.messageId, 'string', show(data));
  return { id: data.messageId, clientMessageId, seq: data.seq };
}

/** Like waitFor, but an event already recorded (since the socket connected) counts too: receipts
 *  may arrive before the ack of the action that caused them. */
async function seenOrWait(socket, event, pred, timeoutMs = 15_000) {
  const p = waitFor(socket, event, pred, timeoutMs);
  const already = socket.received.find((r) => r.event === event && (() => { try { return pred(r.args[0]); } catch { return false; } })());
  if (already) {
    p.catch(() => {});
    return already.args[0];
  }
  return p;
}

async function waitDelivered(socket, messageId, count, timeoutMs = 15_000) {
  try {
    return await seenOrWait(socket, 'message:delivered', (e) => e && e.messageId === messageId && e.deliveredCount === count, timeoutMs);
  } catch (e) {
    const all = eventsOf(socket, 'message:delivered', (x) => x && x.messageId === messageId);
    throw new Error(`no message:delivered {deliveredCount: ${count}} for ${messageId} within ${timeoutMs} ms; ` +
      `message:delivered for it so far: ${show(all)}; message:ack: ${show(eventsOf(socket, 'message:ack'))}`);
  }
}

function waitRead(socket, messageId, userId, timeoutMs = 15_000) {
  return waitFor(socket, 'message:read', (e) => e && e.messageId === messageId && e.userId === userId, timeoutMs);
}

function checkDelivered(e, exp) {
  const ctx = show(e);
  assert.equal(e.messageId, exp.messageId, ctx);
  assert.equal(e.deliveredCount, exp.deliveredCount, `deliveredCount: ${ctx}`);
  assert.equal(e.totalRecipients, 3, `totalRecipients = members other than the sender: ${ctx}`);
  assertIso(e.deliveredAt, 'message:delivered.deliveredAt');
}

function checkRead(e, exp) {
  const ctx = show(e);
  assert.equal(e.messageId, exp.messageId, ctx);
  assert.equal(e.userId, exp.userId, ctx);
  assert.equal(e.readCount, exp.readCount, `readCount: ${ctx}`);
  assert.equal(e.totalRecipients, 3, `totalRecipients: ${ctx}`);
  assertIso(e.readAt, 'message:read.readAt');
}

async function deliverySync(socket, messageIds) {
  const respP = waitFor(socket, 'delivery:sync-response', (r) => r && Array.isArray(r.statuses) && r.statuses.length === messageIds.length);
  socket.emit('delivery:sync', { messageIds });
  const resp = await respP;
  const byId = {};
  for (const st of resp.statuses) {
    assert.ok(['sent', 'delivered', 'read', 'failed'].includes(st.state), `state must be sent|delivered|read|failed: ${show(st)}`);
    for (const k of ['deliveredCount', 'readCount', 'totalRecipients']) assert.ok(Number.isInteger(st[k]), `${k}: ${show(st)}`);
    assertIso(st.updatedAt, 'delivery:sync-response updatedAt');
    byId[st.messageId] = st;
  }
  for (const id of messageIds) assert.ok(byId[id], `no status for ${id} (ids are echoed as sent): ${show(resp)}`);
  return byId;
}

function pick(st) {
  return { state: st.state, deliveredCount: st.deliveredCount, readCount: st.readCount, totalRecipients: st.totalRecipients };
}

function disconnectAll(...socks) {
  for (const s of socks) if (s) s.disconnect();
}

async function unreadOf(socket, channelId) {
  const data = assertOk(await emitAck(socket, 'sync:channels', { since: null }), 'sync:channels');
  const ch = data.channels.find((c) => c.id === channelId);
  assert.ok(ch, `channel ${channelId} missing from sync:channels: ${show(data)}`);
  return ch.unreadCount;
}

/** Sets up messages in the three delivery states; returns what delivery:sync should say. */
async function threeStates(server) {
  const { channelId, sender, s, recipients } = await room4(server);
  const [r1, r2, r3] = recipients;
  // A: delivered to all three and read by all three
  const a = await send(s.socket, channelId);
  await waitDelivered(s.socket, a.id, 3);
  for (const r of recipients) {
    const p = waitRead(s.socket, a.id, r.userId);
    assertOk(await emitAck(r.c.socket, 'message:read-ack', { messageId: a.id, channelId, readAt: new Date().toISOString() }), 'read-ack');
    await p;
  }
  // B: delivered to all three, read by nobody
  const b = await send(s.socket, channelId);
  await waitDelivered(s.socket, b.id, 3);
  // C: r3 is offline → delivered to 2 of 3
  r3.c.socket.disconnect();
  await waitGone(server, [r3.userId]);
  const c = await send(s.socket, channelId);
  await waitDelivered(s.socket, c.id, 2);
  return {
    channelId, sender, s, r1, r2, a, b, c,
    expected: {
      A: { state: 'read', deliveredCount: 3, readCount: 3, totalRecipients: 3 },
      B: { state: 'delivered', deliveredCount: 3, readCount: 0, totalRecipients: 3 },
      C: { state: 'sent', deliveredCount: 2, readCount: 0, totalRecipients: 3 },
    },
  };
}

// ---------------------------------------------------------------------------------------------

for (const backend of backends()) {
  describe(`receipts and reactions [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name });
    });
    after(() => shutdown(server));

    it('message:delivered counts 1 → 3 of 3 (push, then sync by the members who were offline) and message:ack delivered', async () => {
      const { channelId, room, sender, s, recipients } = await room4(server, { online: [true, false, false] });
      const s2 = await connectClient(server, { user: sender }); // the sender's other device
      const m = await send(s.socket, channelId);
      checkDelivered(await waitDelivered(s.socket, m.id, 1), { messageId: m.id, deliveredCount: 1 });
      await waitDelivered(s2.socket, m.id, 1);

      // r2 comes back and fetches through sync → delivered to 2
      const r2 = await connectClient(server, { user: recipients[1].userId });
      assert.ok(r2.authenticated.rooms.includes(room), show(r2.authenticated));
      const p2 = waitDelivered(s.socket, m.id, 2);
      assertOk(await emitAck(r2.socket, 'sync:messages', { channelId, since: null, limit: 50 }), 'sync:messages');
      checkDelivered(await p2, { messageId: m.id, deliveredCount: 2 });

      // r3 too → 3 of 3, and the state turns delivered
      const r3 = await connectClient(server, { user: recipients[2].userId });
      const p3 = waitDelivered(s.socket, m.id, 3);
      const ackP = waitFor(s.socket, 'message:ack', (e) => e && e.messageId === m.id && e.status === 'delivered');
      assertOk(await emitAck(r3.socket, 'sync:messages', { channelId, since: null, limit: 50 }), 'sync:messages');
      checkDelivered(await p3, { messageId: m.id, deliveredCount: 3 });
      await ackP;

      // a repeated sync is not a new delivery
      const mark = s.socket.received.length;
      assertOk(await emitAck(r3.socket, 'sync:messages', { channelId, since: null, limit: 50 }), 'sync:messages again');
      await expectNoEvent(s.socket, 'message:delivered', 500, (e) => e && e.messageId === m.id, { from: mark });
      // receipts go to the sender only
      for (const r of [recipients[0].c.socket, r2.socket, r3.socket]) {
        assert.equal(eventsOf(r, 'message:delivered').length, 0, `a recipient must not get message:delivered: ${show(eventsOf(r, 'message:delivered'))}`);
      }
      disconnectAll(s.socket, s2.socket, recipients[0].c.socket, r2.socket, r3.socket);
    });

    it('message:read readCount 1, 2, 3 of totalRecipients 3 ("all read") through read-ack, read:update and receipt:update', async () => {
      const { channelId, room, s, recipients } = await room4(server);
      const [r1, r2, r3] = recipients;
      const m = await send(s.socket, channelId);
      await waitDelivered(s.socket, m.id, 3);

      let p = waitRead(s.socket, m.id, r1.userId);
      const d1 = assertOk(await emitAck(r1.c.socket, 'message:read-ack', { messageId: m.id, channelId, readAt: new Date().toISOString() }), 'message:read-ack');
      assert.deepEqual(d1, { channelId, roomName: room, readSeq: m.seq }, `read ack data is {channelId, roomName, readSeq}: ${show(d1)}`);
      checkRead(await p, { messageId: m.id, userId: r1.userId, readCount: 1 });

      p = waitRead(s.socket, m.id, r2.userId);
      assertOk(await emitAck(r2.c.socket, 'read:update', { channelId, messageId: m.id }), 'read:update');
      checkRead(await p, { messageId: m.id, userId: r2.userId, readCount: 2 });

      p = waitRead(s.socket, m.id, r3.userId);
      assertOk(await emitAck(r3.c.socket, 'receipt:update', { messageId: m.id, status: 'read', readAt: new Date().toISOString() }), 'receipt:update');
      const last = await p;
      checkRead(last, { messageId: m.id, userId: r3.userId, readCount: 3 });
      assert.equal(last.readCount, last.totalRecipients, 'all read');

      // reading again changes nothing
      const mark = s.socket.received.length;
      assertOk(await emitAck(r1.c.socket, 'message:read-ack', { messageId: m.id, channelId, readAt: new Date().toISOString() }), 'read-ack again');
      await expectNoEvent(s.socket, 'message:read', 500, () => true, { from: mark });
      for (const r of recipients) {
        assert.equal(eventsOf(r.c.socket, 'message:read').length, 0, `read receipts go to the sender only: ${show(eventsOf(r.c.socket, 'message:read'))}`);
      }
      // reading a message of a room the reader is not in is refused
      const outsider = await connectClient(server, { user: uid('outsider') });
      const ack = await emitAck(outsider.socket, 'message:read-ack', { messageId: m.id, channelId, readAt: new Date().toISOString() });
      assertErr(ack, 'NOT_A_MEMBER', 'read-ack by a non-member');
      // an unknown message id is VALIDATION_ERROR naming the field (docs/protocol.md §3.4)
      const unknown = uid('no-such-message');
      const e1 = assertErr(await emitAck(r1.c.socket, 'message:read-ack', { messageId: unknown }), 'VALIDATION_ERROR', 'read-ack of an unknown message');
      assert.deepEqual(e1.details, { field: 'messageId' }, show(e1));
      assert.ok(e1.message.includes(unknown), show(e1));
      await expectNoEvent(s.socket, 'message:read', 300, (e) => e && e.userId === outsider.authenticated.userId);
      disconnectAll(s.socket, outsider.socket, ...recipients.map((r) => r.c.socket));
    });

    it('message:batch-read for message:batch-read-ack and for channel:read', async () => {
      const { channelId, s, recipients } = await room4(server);
      const [r1, r2] = recipients;
      const ms = [];
      for (let i = 0; i < 3; i++) ms.push(await send(s.socket, channelId));
      const ids = ms.map((m) => m.id);
      await waitDelivered(s.socket, ids[2], 3);

      let p = waitFor(s.socket, 'message:batch-read', (e) => e && e.userId === r1.userId);
      assertOk(await emitAck(r1.c.socket, 'message:batch-read-ack', { messageIds: ids, channelId, readAt: new Date().toISOString() }), 'batch-read-ack');
      let e = await p;
      assert.equal(e.channelId, channelId, show(e));
      assert.deepEqual([...e.messageIds].sort(), [...ids].sort(), `messageIds: ${show(e)}`);
      assertIso(e.readAt, 'message:batch-read.readAt');

      p = waitFor(s.socket, 'message:batch-read', (x) => x && x.userId === r2.userId);
      assertOk(await emitAck(r2.c.socket, 'channel:read', { channelId, readAt: new Date().toISOString() }), 'channel:read');
      e = await p;
      assert.equal(e.channelId, channelId, show(e));
      assert.deepEqual([...e.messageIds].sort(), [...ids].sort(), `channel:read covers every unread message: ${show(e)}`);

      // the counts reflect both batch reads
      const st = await deliverySync(s.socket, ids);
      for (const id of ids) assert.deepEqual(pick(st[id]), { state: 'delivered', deliveredCount: 3, readCount: 2, totalRecipients: 3 }, show(st[id]));
      disconnectAll(s.socket, ...recipients.map((r) => r.c.socket));
    });

    it('read receipts off (presence:settings {allowReadReceipts:false}): that reader\'s reads produce no message:read* and are not counted', async () => {
      const { channelId, s, recipients } = await room4(server);
      const [r1, r2, r3] = recipients;
      const merged = assertOk(await emitAck(r3.c.socket, 'presence:settings', { allowReadReceipts: false }), 'presence:settings');
      assert.equal(merged.allowReadReceipts, false, show(merged));

      const m = await send(s.socket, channelId);
      await waitDelivered(s.socket, m.id, 3);
      const mark = s.socket.received.length;
      assertOk(await emitAck(r3.c.socket, 'message:read-ack', { messageId: m.id, channelId, readAt: new Date().toISOString() }), 'read-ack (receipts off)');
      const m2 = await send(s.socket, channelId);
      await waitDelivered(s.socket, m2.id, 3);
      assertOk(await emitAck(r3.c.socket, 'message:batch-read-ack', { messageIds: [m2.id], channelId, readAt: new Date().toISOString() }), 'batch (receipts off)');
      assertOk(await emitAck(r3.c.socket, 'channel:read', { channelId }), 'channel:read (receipts off)');
      await expectNoEvent(s.socket, 'message:read', 600, (e) => e && e.userId === r3.userId, { from: mark });
      await expectNoEvent(s.socket, 'message:batch-read', 0, (e) => e && e.userId === r3.userId, { from: mark });

      // r1 reads: the count does not include r3
      const p = waitRead(s.socket, m.id, r1.userId);
      assertOk(await emitAck(r1.c.socket, 'message:read-ack', { messageId: m.id, channelId, readAt: new Date().toISOString() }), 'read-ack r1');
      checkRead(await p, { messageId: m.id, userId: r1.userId, readCount: 1 });
      const st = await deliverySync(s.socket, [m.id]);
      assert.equal(st[m.id].readCount, 1, `r3's read must not show in delivery:sync either: ${show(st[m.id])}`);

      // turned back on: reads are reported again
      assertOk(await emitAck(r3.c.socket, 'presence:settings', { allowReadReceipts: true }), 'presence:settings on');
      const m3 = await send(s.socket, channelId);
      await waitDelivered(s.socket, m3.id, 3);
      const p3 = waitRead(s.socket, m3.id, r3.userId);
      assertOk(await emitAck(r3.c.socket, 'message:read-ack', { messageId: m3.id, channelId, readAt: new Date().toISOString() }), 'read-ack r3 on');
      await p3;
      disconnectAll(s.socket, ...recipients.map((r) => r.c.socket));
      void r2;
    });

    it('delivery:sync after a reconnect: by client id and by server id → sent | delivered | read, unknown id → failed', async () => {
      const t = await threeStates(server);
      t.s.socket.disconnect();
      await sleep(200);
      const s = await connectClient(server, { user: t.sender });
      const unknown = uid('never-sent');
      const ids = [t.a.clientMessageId, t.b.id, t.c.clientMessageId, t.c.id, unknown];
      const st = await deliverySync(s.socket, ids);
      assert.deepEqual(pick(st[t.a.clientMessageId]), t.expected.A, `A by client id: ${show(st[t.a.clientMessageId])}`);
      assert.deepEqual(pick(st[t.b.id]), t.expected.B, `B by server id: ${show(st[t.b.id])}`);
      assert.deepEqual(pick(st[t.c.clientMessageId]), t.expected.C, `C by client id: ${show(st[t.c.clientMessageId])}`);
      assert.deepEqual(pick(st[t.c.id]), t.expected.C, `C by server id: ${show(st[t.c.id])}`);
      assert.equal(st[unknown].state, 'failed', `unknown id: ${show(st[unknown])}`);
      // another user's client id is not theirs to look up
      const other = await connectClient(server, { user: uid('nosy') });
      const st2 = await deliverySync(other.socket, [t.a.clientMessageId]);
      assert.equal(st2[t.a.clientMessageId].state, 'failed', `someone else's client id: ${show(st2)}`);
      disconnectAll(s.socket, other.socket, t.r1.c.socket, t.r2.c.socket);
    });

    it('sync:channels unreadCount counts others\' messages after the read watermark and drops after channel:read', async () => {
      const { channelId, s, recipients } = await room4(server);
      const [r1, r2] = recipients;
      for (let i = 0; i < 3; i++) await send(s.socket, channelId);
      assert.equal(await unreadOf(r1.c.socket, channelId), 3, 'three unread for r1');
      assert.equal(await unreadOf(s.socket, channelId), 0, 'the sender\'s own messages are not unread for them');
      assertOk(await emitAck(r1.c.socket, 'channel:read', { channelId, readAt: new Date().toISOString() }), 'channel:read');
      assert.equal(await unreadOf(r1.c.socket, channelId), 0, 'unreadCount right after channel:read');
      assert.equal(await unreadOf(r2.c.socket, channelId), 3, 'another reader is unaffected');
      await send(s.socket, channelId);
      assert.equal(await unreadOf(r1.c.socket, channelId), 1, 'a new message is unread again');
      disconnectAll(s.socket, ...recipients.map((r) => r.c.socket));
    });

    it('reactions: add twice = one (count 1, no second broadcast), another user → 2, remove → 1 → 0', async () => {
      const { channelId, s, recipients } = await room4(server);
      const [r1, r2] = recipients;
      const m = await send(s.socket, channelId);
      const emoji = '👍';
      const check = (e, userId, count) => {
        const ctx = show(e);
        assert.equal(e.messageId, m.id, ctx);
        assert.equal(e.channelId, channelId, ctx);
        assert.equal(e.userId, userId, ctx);
        assert.equal(e.emoji, emoji, ctx);
        assert.equal(e.count, count, `count: ${ctx}`);
      };

      let pS = waitFor(s.socket, 'reaction:add', (e) => e && e.messageId === m.id && e.userId === r1.userId);
      let pR2 = waitFor(r2.c.socket, 'reaction:add', (e) => e && e.messageId === m.id && e.userId === r1.userId);
      const a1 = assertOk(await emitAck(r1.c.socket, 'reaction:add', { messageId: m.id, channelId, emoji }), 'reaction:add');
      check(await pS, r1.userId, 1);
      check(await pR2, r1.userId, 1);
      const expectedAck = { messageId: m.id, channelId, roomName: `channel:${channelId}`, userId: r1.userId, emoji, count: 1 };
      assert.deepEqual(a1, expectedAck, `reaction:add ack data: ${show(a1)}`);

      const mark = s.socket.received.length;
      const a2 = assertOk(await emitAck(r1.c.socket, 'reaction:add', { messageId: m.id, channelId, emoji }), 'reaction:add again');
      assert.deepEqual(a2, expectedAck, `a repeated add is idempotent and acks the same object: ${show(a2)}`);
      await expectNoEvent(s.socket, 'reaction:add', 500, () => true, { from: mark });

      pS = waitFor(s.socket, 'reaction:add', (e) => e && e.messageId === m.id && e.userId === r2.userId);
      assertOk(await emitAck(r2.c.socket, 'reaction:add', { messageId: m.id, channelId, emoji }), 'reaction:add r2');
      check(await pS, r2.userId, 2);

      // another emoji is counted on its own
      const pHeart = waitFor(s.socket, 'reaction:add', (e) => e && e.messageId === m.id && e.emoji === '❤️');
      assertOk(await emitAck(r1.c.socket, 'reaction:add', { messageId: m.id, channelId, emoji: '❤️' }), 'reaction:add ❤️');
      assert.equal((await pHeart).count, 1, 'a different emoji has its own count');

      pS = waitFor(s.socket, 'reaction:remove', (e) => e && e.messageId === m.id && e.userId === r1.userId);
      assertOk(await emitAck(r1.c.socket, 'reaction:remove', { messageId: m.id, channelId, emoji }), 'reaction:remove r1');
      check(await pS, r1.userId, 1);
      const mark2 = s.socket.received.length;
      assertOk(await emitAck(r1.c.socket, 'reaction:remove', { messageId: m.id, channelId, emoji }), 'reaction:remove r1 again');
      await expectNoEvent(s.socket, 'reaction:remove', 400, () => true, { from: mark2 });

      pR2 = waitFor(r2.c.socket, 'reaction:remove', (e) => e && e.messageId === m.id && e.userId === r2.userId);
      assertOk(await emitAck(r2.c.socket, 'reaction:remove', { messageId: m.id, channelId, emoji }), 'reaction:remove r2');
      check(await pR2, r2.userId, 0);

      // outsiders cannot react; unknown messages are refused
      const outsider = await connectClient(server, { user: uid('outsider') });
      assertErr(await emitAck(outsider.socket, 'reaction:add', { messageId: m.id, channelId, emoji }), 'NOT_A_MEMBER', 'outsider reacts');
      for (const event of ['reaction:add', 'reaction:remove']) {
        const nope = uid('nope');
        const e = assertErr(await emitAck(r1.c.socket, event, { messageId: nope, channelId, emoji }), 'VALIDATION_ERROR', `${event} on an unknown message`);
        assert.ok(e.message.includes(nope), show(e));
        assert.deepEqual(e.details, { field: 'messageId' }, show(e));
      }
      disconnectAll(s.socket, outsider.socket, ...recipients.map((r) => r.c.socket));
    });
  });

  describe(`delivery:sync across a restart [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name });
    });
    after(() => shutdown(server));

    it('statuses survive a server restart (answered from the database), a read made just before SIGTERM included', async () => {
      const t = await threeStates(server);
      // Writes are held from outside, so the watermark of this last read cannot reach the database before
      // SIGTERM (the once-a-second flush waits for the lock): only the shutdown's own flush can write it.
      const lock = await holdWriteLock(server, { tables: ['np_realtime_room_members', 'np_realtime_deliveries'], ms: 4000 });
      let lockGone = false;
      lock.released.then(() => { lockGone = true; }, () => {});
      const readB = waitRead(t.s.socket, t.b.id, t.r1.userId);
      assertOk(await emitAck(t.r1.c.socket, 'message:read-ack', { messageId: t.b.id }), 'read-ack of B');
      await readB;
      assert.equal(lockGone, false, 'the lock must still hold the watermark back at SIGTERM');
      const restarted = server.restart(); // SIGTERM while the watermark is pending: it must be written, not dropped
      await lock.released;
      await restarted;
      const s = await connectClient(server, { user: t.sender });
      const unknown = uid('never-sent');
      const st = await deliverySync(s.socket, [t.a.clientMessageId, t.b.id, t.c.id, unknown]);
      assert.deepEqual(pick(st[t.a.clientMessageId]), t.expected.A, `A by client id after restart: ${show(st[t.a.clientMessageId])}`);
      assert.deepEqual(pick(st[t.b.id]), { ...t.expected.B, readCount: 1 }, `B after restart (read by r1 just before SIGTERM): ${show(st[t.b.id])}`);
      assert.deepEqual(pick(st[t.c.id]), t.expected.C, `C after restart: ${show(st[t.c.id])}`);
      assert.equal(st[unknown].state, 'failed', show(st[unknown]));
      // and r1 sees only C as unread: the watermark written at shutdown is the one unread counts use
      const r1 = await connectClient(server, { user: t.r1.userId });
      assert.equal(await unreadOf(r1.socket, t.channelId), 1, 'r1 read up to B before the restart: only C is unread');
      s.socket.disconnect();
      r1.socket.disconnect();
    });
  });
}
