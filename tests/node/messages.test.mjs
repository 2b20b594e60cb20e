// docs/protocol.md §6: message:send (both shapes), acks, the superset message:new, message:sent /
// message:failed, idempotent retries, edit/delete. Run against SQLite and PostgreSQL.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, waitFor, expectNoEvent, countEvents,
  assertOk, assertErr, assertIso, show, uid, join, http, API_KEY, barrier, mintToken,
} from './harness.mjs';

noteSkips();

function checkAckData(data, { clientMessageId } = {}) {
  assert.ok(data && typeof data === 'object', `ack data: ${show(data)}`);
  assert.ok(typeof data.messageId === 'string' && data.messageId.length > 0, `ack data.messageId: ${show(data)}`);
  assert.ok(Number.isInteger(data.seq) && data.seq >= 0, `ack data.seq must be an integer: ${show(data)}`);
  assertIso(data.createdAt, 'ack data.createdAt');
  if (clientMessageId !== undefined) assert.equal(data.clientMessageId, clientMessageId, `ack data.clientMessageId: ${show(data)}`);
}

/** Assert the superset message:new payload against the ack and the expectation. */
function checkMessageNew(m, ackData, exp) {
  const ctx = `message:new ${show(m)}`;
  assert.equal(m.id, ackData.messageId, `id must equal the acked messageId: ${ctx}`);
  assert.equal(m.messageId, ackData.messageId, `messageId: ${ctx}`);
  assert.equal(m.roomName, exp.roomName, `roomName: ${ctx}`);
  if (exp.channelId !== undefined) assert.equal(m.channelId, exp.channelId, `channelId: ${ctx}`);
  assert.equal(m.userId, exp.userId, `userId: ${ctx}`);
  if (exp.userName !== undefined) assert.equal(m.userName, exp.userName, `userName (from the name claim): ${ctx}`);
  assert.equal(m.content, exp.content, `content: ${ctx}`);
  if (exp.type !== undefined) assert.equal(m.type, exp.type, `type: ${ctx}`);
  else assert.ok(typeof m.type === 'string' && m.type.length > 0, `type: ${ctx}`);
  assert.equal(m.seq, ackData.seq, `seq must equal the acked seq: ${ctx}`);
  assertIso(m.createdAt, 'message:new.createdAt');
  assert.equal(Date.parse(m.createdAt), Date.parse(ackData.createdAt), `createdAt must equal the acked createdAt: ${ctx}`);
  assertIso(m.timestamp, 'message:new.timestamp');
  if (exp.clientMessageId !== undefined) assert.equal(m.clientMessageId, exp.clientMessageId, `clientMessageId: ${ctx}`);
}

// the two backends' suites run side by side (each has its own server)
describe('messages', { concurrency: 2 }, () => {
for (const backend of backends()) {
  describe(`messages [${backend.name}]`, { skip: backend.skip, concurrency: 1 }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name });
    });
    after(() => shutdown(server));

    it('shape {roomName, content}: ack data, message:new to other members AND the sender\'s own sockets', async () => {
      const room = uid('room');
      const alice = uid('alice');
      const a1 = await connectClient(server, { user: alice, claims: { name: 'Alice A' } });
      const a2 = await connectClient(server, { user: alice, claims: { name: 'Alice A' } });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a1.socket, room);
      await join(a2.socket, room);
      await join(b.socket, room);

      const content = uid('hello');
      const pred = (m) => m && m.content === content;
      const gotB = waitFor(b.socket, 'message:new', pred);
      const gotA1 = waitFor(a1.socket, 'message:new', pred);
      const gotA2 = waitFor(a2.socket, 'message:new', pred);
      const ack = await emitAck(a1.socket, 'message:send', { roomName: room, content });
      const data = assertOk(ack, 'message:send');
      checkAckData(data);
      const exp = { roomName: room, userId: alice, userName: 'Alice A', content };
      checkMessageNew(await gotB, data, exp);
      checkMessageNew(await gotA1, data, exp);
      checkMessageNew(await gotA2, data, exp);
      for (const c of [a1, a2, b]) c.socket.disconnect();
    });

    it('shape {channelId, content, type, clientMessageId}: room channel:<id>, message:new + message:sent', async () => {
      const channelId = uid('chan');
      const room = `channel:${channelId}`;
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);

      const content = uid('offline-queue');
      const cmid = uid('cmid');
      const gotB = waitFor(b.socket, 'message:new', (m) => m && m.content === content);
      const gotA = waitFor(a.socket, 'message:new', (m) => m && m.content === content);
      const sentP = waitFor(a.socket, 'message:sent', (s) => s && s.clientMessageId === cmid);
      const ack = await emitAck(a.socket, 'message:send', { channelId, content, type: 'text', clientMessageId: cmid, mentions: [], attachments: [] });
      const data = assertOk(ack, 'message:send (channelId shape)');
      checkAckData(data, { clientMessageId: cmid });
      const exp = { roomName: room, channelId, userId: alice, content, type: 'text', clientMessageId: cmid };
      checkMessageNew(await gotB, data, exp);
      checkMessageNew(await gotA, data, exp);
      const sent = await sentP;
      assert.equal(sent.messageId, data.messageId, `message:sent.messageId: ${show(sent)}`);
      assertIso(sent.sentAt, 'message:sent.sentAt');
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('{roomName: "channel:<id>"} carries channelId = bare id in message:new', async () => {
      const channelId = uid('chan');
      const room = `channel:${channelId}`;
      const a = await connectClient(server, { user: uid('alice') });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      const content = uid('x');
      const got = waitFor(b.socket, 'message:new', (m) => m && m.content === content);
      const data = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content }), 'message:send');
      const m = await got;
      assert.equal(m.channelId, channelId, `channelId: ${show(m)}`);
      assert.equal(m.id, data.messageId, show(m));
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('threadId / replyTo / metadata / mentions are carried to message:new', async () => {
      const channelId = uid('chan');
      const a = await connectClient(server, { user: uid('alice') });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, `channel:${channelId}`);
      await join(b.socket, `channel:${channelId}`);
      const content = uid('rich');
      const got = waitFor(b.socket, 'message:new', (m) => m && m.content === content);
      const first = assertOk(await emitAck(a.socket, 'message:send', { roomName: `channel:${channelId}`, content: 'root' }), 'send root');
      const payload = {
        channelId, content, type: 'text', clientMessageId: uid('c'), threadId: 'th-1', mentions: ['u-1', 'u-2'],
        replyTo: first.messageId,
      };
      const data = assertOk(await emitAck(a.socket, 'message:send', payload), 'send rich');
      const m = await got;
      assert.equal(m.id, data.messageId, show(m));
      assert.equal(m.threadId, 'th-1', `threadId: ${show(m)}`);
      assert.deepEqual(m.mentions, ['u-1', 'u-2'], `mentions: ${show(m)}`);
      assert.equal(m.replyTo, first.messageId, `replyTo: ${show(m)}`);

      const content2 = uid('meta');
      const got2 = waitFor(b.socket, 'message:new', (x) => x && x.content === content2);
      assertOk(await emitAck(a.socket, 'message:send', { roomName: `channel:${channelId}`, content: content2, metadata: { k: 'v', n: 1 } }), 'send meta');
      const m2 = await got2;
      assert.deepEqual(m2.metadata, { k: 'v', n: 1 }, `metadata: ${show(m2)}`);
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('userName / userAvatar come from the claims displayName / picture (and name / avatarUrl)', async () => {
      const room = uid('names');
      const a = await connectClient(server, { user: uid('alice'), claims: { name: undefined, displayName: 'Alice Display', picture: 'https://img.test/a.png' } });
      const b = await connectClient(server, { user: uid('bob'), claims: { name: 'Bob Name', avatarUrl: 'https://img.test/b.png' } });
      await join(a.socket, room);
      await join(b.socket, room);
      const c1 = uid('from-a');
      const g1 = waitFor(b.socket, 'message:new', (m) => m && m.content === c1);
      assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: c1 }), 'send a');
      const m1 = await g1;
      assert.equal(m1.userName, 'Alice Display', show(m1));
      assert.equal(m1.userAvatar, 'https://img.test/a.png', show(m1));
      const c2 = uid('from-b');
      const g2 = waitFor(a.socket, 'message:new', (m) => m && m.content === c2);
      assertOk(await emitAck(b.socket, 'message:send', { roomName: room, content: c2 }), 'send b');
      const m2 = await g2;
      assert.equal(m2.userName, 'Bob Name', show(m2));
      assert.equal(m2.userAvatar, 'https://img.test/b.png', show(m2));
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('a room moderator may edit and delete another user\'s message', async () => {
      const room = uid('modroom');
      const author = uid('author');
      const mod = uid('mod');
      assert.equal((await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name: room } })).status, 201);
      const add = await http(server, 'POST', `/api/rooms/${encodeURIComponent(room)}/members`, { apiKey: API_KEY, body: { userId: mod, role: 'moderator' } });
      assert.ok(add.status < 300, show(add.body));
      const a = await connectClient(server, { user: author });
      const m = await connectClient(server, { user: mod });
      await join(a.socket, room);
      await join(m.socket, room);
      const d = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: 'spam' }), 'send');
      const upd = waitFor(a.socket, 'message:update', (u) => u && u.messageId === d.messageId);
      assertOk(await emitAck(m.socket, 'message:edit', { messageId: d.messageId, content: '[moderated]' }), 'moderator edit');
      assert.equal((await upd).editedBy, mod);
      const del = waitFor(a.socket, 'message:delete', (x) => x && x.messageId === d.messageId);
      assertOk(await emitAck(m.socket, 'message:delete', { messageId: d.messageId }), 'moderator delete');
      assert.equal((await del).deletedBy, mod);
      a.socket.disconnect();
      m.socket.disconnect();
    });

    it('seq is per-room monotonic', async () => {
      const room = uid('seq');
      const other = uid('seq-other');
      const { socket } = await connectClient(server, { user: uid('alice') });
      await join(socket, room);
      await join(socket, other);
      const seqs = [];
      for (let i = 0; i < 4; i++) {
        const d = assertOk(await emitAck(socket, 'message:send', { roomName: room, content: `m${i}` }), 'send');
        seqs.push(d.seq);
        // interleave another room: must not disturb this room's sequence
        assertOk(await emitAck(socket, 'message:send', { roomName: other, content: `o${i}` }), 'send other');
      }
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seq must increase: ${show(seqs)}`);
      socket.disconnect();
    });

    it('retry with the same clientMessageId → the original ack with duplicate: true, message:sent again, broadcast once', async () => {
      const room = uid('idem');
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      const cmid = uid('cmid');
      const content = uid('once');
      const gotFirst = waitFor(b.socket, 'message:new', (m) => m && m.content === content);
      const d1 = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content, clientMessageId: cmid }), 'first send');
      assert.equal(d1.duplicate, undefined, `a first send is no duplicate: ${show(d1)}`);
      assert.equal((await gotFirst).messageId, d1.messageId);
      const sentAgain = waitFor(a.socket, 'message:sent', (m) => m && m.clientMessageId === cmid && m.messageId === d1.messageId);
      const d2 = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content, clientMessageId: cmid }), 'retry');
      assert.equal(d2.messageId, d1.messageId, `retry must ack the same messageId: first=${show(d1)} retry=${show(d2)}`);
      assert.equal(d2.seq, d1.seq, `retry must ack the same seq: first=${show(d1)} retry=${show(d2)}`);
      assert.equal(d2.createdAt, d1.createdAt, `retry must ack the same createdAt: first=${show(d1)} retry=${show(d2)}`);
      assert.equal(d2.duplicate, true, `a retry is acked with duplicate: true: ${show(d2)}`);
      await sentAgain;

      // a retry from the user's other device (offline queue flushed elsewhere) is the same message too
      const a2 = await connectClient(server, { user: alice });
      const d3 = assertOk(await emitAck(a2.socket, 'message:send', { roomName: room, content, clientMessageId: cmid }), 'retry from 2nd device');
      assert.equal(d3.messageId, d1.messageId, show(d3));
      assert.equal(d3.duplicate, true, show(d3));

      // whatever the retries broadcast reached bob before this later message does
      await barrier(a.socket, b.socket, room);
      const n = countEvents(b.socket, 'message:new', (m) => m && m.content === content);
      assert.equal(n, 1, `bob must see exactly one message:new, saw ${n}: ${show(b.socket.received.filter((r) => r.event === 'message:new'))}`);
      const hist = assertOk(await emitAck(b.socket, 'sync:messages', { roomName: room, since: null, limit: 100 }), 'sync');
      assert.equal(hist.messages.filter((m) => m.content === content).length, 1, `stored once: ${show(hist.messages)}`);
      for (const c of [a, a2, b]) c.socket.disconnect();
    });

    it('concurrent duplicates from two devices of the user (one clientMessageId) → one message, the others duplicate: true', async () => {
      const room = uid('idem2');
      const alice = uid('alice');
      const a1 = await connectClient(server, { user: alice });
      const a2 = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a1.socket, room);
      await join(b.socket, room);
      const cmid = uid('cmid');
      const content = uid('burst');
      // both devices flush the same offline queue at once: events of different sockets run concurrently
      const payload = { roomName: room, content, clientMessageId: cmid };
      const acks = await Promise.all([a1, a2, a1, a2, a1, a2].map((c) => emitAck(c.socket, 'message:send', payload, 10_000)));
      const datas = acks.map((x) => assertOk(x, 'concurrent send'));
      const ids = new Set(datas.map((d) => d.messageId));
      assert.equal(ids.size, 1, `all acks must carry one messageId: ${show(acks)}`);
      assert.equal(new Set(datas.map((d) => d.seq)).size, 1, `all acks must carry one seq: ${show(acks)}`);
      assert.equal(datas.filter((d) => d.duplicate !== true).length, 1, `exactly one ack is the original, the others duplicate: true: ${show(datas)}`);
      await barrier(a1.socket, b.socket, room);
      const n = countEvents(b.socket, 'message:new', (m) => m && m.content === content);
      assert.equal(n, 1, `bob must see exactly one message:new, saw ${n}`);
      const hist = assertOk(await emitAck(b.socket, 'sync:messages', { roomName: room, since: null, limit: 100 }), 'sync');
      assert.equal(hist.messages.filter((m) => m.content === content).length, 1, `stored once: ${show(hist.messages)}`);
      assert.deepEqual(hist.messages.map((m) => m.seq), hist.messages.map((_, i) => i + 1), `seqs stay gap-free: ${show(hist.messages)}`);
      for (const c of [a1, a2, b]) c.socket.disconnect();
    });

    it('a clientMessageId reused for another room → VALIDATION_ERROR naming the first room; nothing stored or broadcast', async () => {
      const first = uid('first');
      const second = uid('second');
      const a = await connectClient(server, { user: uid('alice') });
      const b = await connectClient(server, { user: uid('bob') });
      for (const r of [first, second]) {
        await join(a.socket, r);
        await join(b.socket, r);
      }
      const cmid = uid('cmid');
      assertOk(await emitAck(a.socket, 'message:send', { roomName: first, content: 'one', clientMessageId: cmid }), 'first send');
      const failed = waitFor(a.socket, 'message:failed', (f) => f && f.clientMessageId === cmid);
      const err = assertErr(await emitAck(a.socket, 'message:send', { roomName: second, content: 'two', clientMessageId: cmid }), 'VALIDATION_ERROR', 'reuse in another room');
      assert.ok(err.message.includes(first), `the error names the room the id was used in: ${show(err)}`);
      assert.equal((await failed).errorCode, 'VALIDATION_ERROR');
      await barrier(a.socket, b.socket, second);
      assert.equal(countEvents(b.socket, 'message:new', (m) => m && m.content === 'two'), 0, 'nothing broadcast');
      const hist = assertOk(await emitAck(b.socket, 'sync:messages', { roomName: second, since: null, limit: 100 }), 'sync');
      assert.ok(!hist.messages.some((m) => m.content === 'two'), `nothing stored: ${show(hist.messages)}`);
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('a retry after losing write access is refused, not acked as a duplicate', async () => {
      const room = uid('lost-access');
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      await join(a.socket, room);
      const cmid = uid('cmid');
      assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: 'before', clientMessageId: cmid }), 'send');
      const ban = await http(server, 'POST', `/api/rooms/${encodeURIComponent(room)}/members`, { apiKey: API_KEY, body: { userId: alice, banned: true } });
      assert.equal(ban.status, 200, show(ban.body));
      assertErr(await emitAck(a.socket, 'message:send', { roomName: room, content: 'before', clientMessageId: cmid }), 'FORBIDDEN', 'retry after a ban');
      a.socket.disconnect();
    });

    it('the same clientMessageId from two different users is two messages', async () => {
      const room = uid('idem3');
      const a = await connectClient(server, { user: uid('alice') });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      const cmid = uid('shared-cmid');
      const da = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: 'from a', clientMessageId: cmid }), 'a');
      const db = assertOk(await emitAck(b.socket, 'message:send', { roomName: room, content: 'from b', clientMessageId: cmid }), 'b');
      assert.notEqual(da.messageId, db.messageId, `idempotency is per user: ${show([da, db])}`);
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('non-member send → error ack + message:failed {clientMessageId, errorCode, errorMessage, retryable}', async () => {
      const room = uid('members-only');
      const a = await connectClient(server, { user: uid('alice') });
      await join(a.socket, room);
      const c = await connectClient(server, { user: uid('carol') });
      const cmid = uid('cmid');
      const content = uid('intruder');
      const failedP = waitFor(c.socket, 'message:failed', (f) => f && f.clientMessageId === cmid);
      const ack = await emitAck(c.socket, 'message:send', { roomName: room, content, clientMessageId: cmid });
      const err = assertErr(ack, 'NOT_A_MEMBER', 'message:send by a non-member');
      const failed = await failedP;
      assert.equal(failed.errorCode, err.code, `message:failed.errorCode should match the ack: ${show(failed)}`);
      assert.equal(typeof failed.errorMessage, 'string', show(failed));
      assert.equal(failed.retryable, false, `a refusal for membership is not retryable: ${show(failed)}`);
      await barrier(a.socket, a.socket, room);
      assert.equal(countEvents(a.socket, 'message:new', (m) => m && m.content === content), 0, 'nothing reached the room');
      a.socket.disconnect();
      c.socket.disconnect();
    });

    it('edit and delete by the author → ack, message:update / message:delete to the room', async () => {
      const channelId = uid('chan');
      const room = `channel:${channelId}`;
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      const data = assertOk(await emitAck(a.socket, 'message:send', { channelId, content: 'original', type: 'text', clientMessageId: uid('c') }), 'send');

      const updP = waitFor(b.socket, 'message:update', (u) => u && u.messageId === data.messageId);
      assertOk(await emitAck(a.socket, 'message:edit', { messageId: data.messageId, content: 'edited' }), 'message:edit');
      const upd = await updP;
      assert.equal(upd.id, data.messageId, show(upd));
      assert.equal(upd.channelId, channelId, `message:update.channelId: ${show(upd)}`);
      assert.equal(upd.content, 'edited', show(upd));
      assert.equal(upd.editedBy, alice, show(upd));
      assertIso(upd.editedAt, 'message:update.editedAt');

      const delP = waitFor(b.socket, 'message:delete', (d) => d && d.messageId === data.messageId);
      assertOk(await emitAck(a.socket, 'message:delete', { messageId: data.messageId }), 'message:delete');
      const del = await delP;
      assert.equal(del.id, data.messageId, show(del));
      assert.equal(del.channelId, channelId, `message:delete.channelId: ${show(del)}`);
      assert.equal(del.deletedBy, alice, show(del));
      assertIso(del.deletedAt, 'message:delete.deletedAt');
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('an author banned from the room may delete but not edit their message', async () => {
      const channelId = uid('chan');
      const room = `channel:${channelId}`;
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      await join(a.socket, room);
      const data = assertOk(await emitAck(a.socket, 'message:send', { channelId, content: 'before the ban', type: 'text', clientMessageId: uid('c') }), 'send');
      const ban = await http(server, 'POST', `/api/rooms/${encodeURIComponent(room)}/members`, { apiKey: API_KEY, body: { userId: alice, banned: true } });
      assert.ok(ban.status < 300, show(ban.body));
      assertErr(await emitAck(a.socket, 'message:edit', { messageId: data.messageId, content: 'after the ban' }), 'FORBIDDEN', 'edit after a ban');
      assertOk(await emitAck(a.socket, 'message:delete', { messageId: data.messageId }), 'delete after a ban');
      a.socket.disconnect();
    });

    it('edit / delete by a non-author member → FORBIDDEN, nothing broadcast', async () => {
      const room = uid('room');
      const a = await connectClient(server, { user: uid('alice') });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      const data = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: 'mine' }), 'send');
      assertErr(await emitAck(b.socket, 'message:edit', { messageId: data.messageId, content: 'hijacked' }), 'FORBIDDEN', 'edit by non-author');
      assertErr(await emitAck(b.socket, 'message:delete', { messageId: data.messageId }), 'FORBIDDEN', 'delete by non-author');
      await barrier(b.socket, a.socket, room);
      assert.equal(countEvents(a.socket, 'message:update'), 0, 'no message:update broadcast');
      assert.equal(countEvents(a.socket, 'message:delete'), 0, 'no message:delete broadcast');
      a.socket.disconnect();
      b.socket.disconnect();
    });

    // docs/protocol.md §2.3: the socket codes have no not-found code besides rooms, so an unknown or deleted
    // message id is VALIDATION_ERROR with details {field: "messageId"}.
    const missingCases = async (a, room) => {
      const missing = uid('no-such-message');
      const data = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: 'soon gone' }), 'send');
      assertOk(await emitAck(a.socket, 'message:delete', { messageId: data.messageId }), 'delete');
      return [
        ['edit of an unknown id', 'message:edit', { messageId: missing, content: 'x' }, missing],
        ['delete of an unknown id', 'message:delete', { messageId: missing }, missing],
        ['edit of a deleted message', 'message:edit', { messageId: data.messageId, content: 'back' }, data.messageId],
        ['delete of a deleted message', 'message:delete', { messageId: data.messageId }, data.messageId],
        ['reaction to a deleted message', 'reaction:add', { messageId: data.messageId, emoji: '👍' }, data.messageId],
      ];
    };

    it('edit / delete / react to a message that does not exist or was deleted → refused naming the id, nothing broadcast', async () => {
      const room = uid('room');
      const a = await connectClient(server, { user: uid('alice') });
      await join(a.socket, room);
      const mark = a.socket.received.length;
      for (const [what, event, payload, id] of await missingCases(a, room)) {
        const err = assertErr(await emitAck(a.socket, event, payload), 'VALIDATION_ERROR', what);
        assert.ok(err.message.includes(id), `${what}: the error names the message: ${show(err)}`);
        assert.deepEqual(err.details, { field: 'messageId' }, `${what}: details name the field: ${show(err)}`);
      }
      await barrier(a.socket, a.socket, room);
      const after = a.socket.received.slice(mark).map((r) => r.event).filter((e) => ['message:update', 'reaction:add'].includes(e));
      assert.deepEqual(after, [], 'nothing broadcast for a refused edit or reaction');
      a.socket.disconnect();
    });

    it('a NUL byte in any inbound string is refused as VALIDATION_ERROR naming the field, on sockets and over HTTP, and nothing is stored', async () => {
      // PostgreSQL text cannot hold NUL; the edge refuses it so both databases answer alike (never INTERNAL_ERROR).
      const room = uid('nul');
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      await join(a.socket, room);
      try {
        const target = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: 'plain' }), 'send');
        const cases = [
          ['content', 'message:send', { roomName: room, content: 'a\u0000b' }],
          ['clientMessageId', 'message:send', { roomName: room, content: 'c', clientMessageId: `c\u0000${uid('d')}` }],
          ['type', 'message:send', { roomName: room, content: 'c', type: 'te\u0000xt' }],
          ['threadId', 'message:send', { roomName: room, content: 't', threadId: 't\u0000d' }],
          ['metadata.note', 'message:send', { roomName: room, content: 'm', metadata: { note: 'x\u0000' } }],
          ['content', 'message:edit', { messageId: target.messageId, content: 'e\u0000f' }],
          ['emoji', 'reaction:add', { messageId: target.messageId, emoji: 'x\u0000' }],
          ['userIds[0]', 'presence:get', { userIds: ['u\u0000'] }],
          ['messageIds[0]', 'delivery:sync', { messageIds: ['m\u0000'] }],
        ];
        for (const [field, event, payload] of cases) {
          const ack = await emitAck(a.socket, event, payload);
          assertErr(ack, 'VALIDATION_ERROR', `${event} with a NUL byte in ${field}`);
          assert.ok(ack.error.message.startsWith(`${field} contains a NUL character`), `${event}: the message names ${field}: ${show(ack)}`);
        }
        const stored = assertOk(await emitAck(a.socket, 'sync:messages', { roomName: room, since: null, limit: 100 }), 'sync').messages;
        assert.deepEqual(stored.map((m) => m.content), ['plain'], `only the plain message is stored, unedited: ${show(stored)}`);

        // HTTP: a body (POST /messages) and a path (%00 in the admin API) answer 400, not 500
        const bearer = { Authorization: `Bearer ${mintToken(alice)}` };
        const res = await http(server, 'POST', '/messages', { headers: bearer, body: { roomName: room, content: 'h\u0000' } });
        assert.equal(res.status, 400, show(res.body));
        assert.equal(res.body.error?.code, 'VALIDATION_ERROR', show(res.body));
        assert.ok(res.body.error.message.startsWith('content contains a NUL character'), show(res.body));
        for (const [method, p] of [['GET', '/api/rooms/r%00x'], ['DELETE', '/api/rooms/r%00x'], ['GET', '/api/users/u%00/presence'],
          ['POST', '/api/rooms/r%00x/members'], ['GET', '/api/events?userId=u%00']]) {
          const r = await http(server, method, p, { apiKey: API_KEY, body: method === 'POST' ? { userId: 'u' } : undefined });
          assert.equal(r.status, 400, `${method} ${p}: ${show(r.body)}`);
          assert.equal(r.body.error?.code, 'VALIDATION_ERROR', `${method} ${p}: ${show(r.body)}`);
        }
        const after = assertOk(await emitAck(a.socket, 'sync:messages', { roomName: room, since: null, limit: 100 }), 'sync').messages;
        assert.equal(after.length, 1, `nothing stored over HTTP either: ${show(after)}`);
      } finally {
        a.socket.disconnect();
      }
    });

    it('message:send without content/room → VALIDATION_ERROR', async () => {
      const { socket } = await connectClient(server, { user: uid('v') });
      assertErr(await emitAck(socket, 'message:send', { content: 'no room' }), 'VALIDATION_ERROR', 'send without room');
      socket.disconnect();
    });
  });
}
});
