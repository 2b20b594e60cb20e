// CONTRACT §5: message:send (both shapes), acks, the superset message:new, message:sent /
// message:failed, idempotent retries, edit/delete. Run against SQLite and PostgreSQL.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  backends, noteSkips, startServer, shutdown, connectClient, emitAck, waitFor, expectNoEvent, countEvents,
  assertOk, assertErr, assertIso, show, uid, join, sleep, http, API_KEY,
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

    it('retry with the same clientMessageId → same messageId, broadcast once', async () => {
      const room = uid('idem');
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      const cmid = uid('cmid');
      const content = uid('once');
      const d1 = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content, clientMessageId: cmid }), 'first send');
      await waitFor(b.socket, 'message:new', (m) => m && m.messageId === d1.messageId).catch(() => {});
      const d2 = assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content, clientMessageId: cmid }), 'retry');
      assert.equal(d2.messageId, d1.messageId, `retry must ack the same messageId: first=${show(d1)} retry=${show(d2)}`);
      assert.equal(d2.seq, d1.seq, `retry must ack the same seq: first=${show(d1)} retry=${show(d2)}`);

      // a retry from the user's other device (offline queue flushed elsewhere) is the same message too
      const a2 = await connectClient(server, { user: alice });
      const d3 = assertOk(await emitAck(a2.socket, 'message:send', { roomName: room, content, clientMessageId: cmid }), 'retry from 2nd device');
      assert.equal(d3.messageId, d1.messageId, show(d3));

      await sleep(700);
      const n = countEvents(b.socket, 'message:new', (m) => m && m.content === content);
      assert.equal(n, 1, `bob must see exactly one message:new, saw ${n}: ${show(b.socket.received.filter((r) => r.event === 'message:new'))}`);
      for (const c of [a, a2, b]) c.socket.disconnect();
    });

    it('concurrent duplicates with one clientMessageId → one message', async () => {
      const room = uid('idem2');
      const a = await connectClient(server, { user: uid('alice') });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      const cmid = uid('cmid');
      const content = uid('burst');
      const acks = await Promise.all(
        [0, 1, 2, 3].map(() => emitAck(a.socket, 'message:send', { roomName: room, content, clientMessageId: cmid })),
      );
      const ids = new Set(acks.map((x) => assertOk(x, 'concurrent send').messageId));
      assert.equal(ids.size, 1, `all acks must carry one messageId: ${show(acks)}`);
      await sleep(700);
      const n = countEvents(b.socket, 'message:new', (m) => m && m.content === content);
      assert.equal(n, 1, `bob must see exactly one message:new, saw ${n}`);
      a.socket.disconnect();
      b.socket.disconnect();
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
      const err = assertErr(ack, ['NOT_A_MEMBER', 'FORBIDDEN'], 'message:send by a non-member');
      const failed = await failedP;
      assert.equal(failed.errorCode, err.code, `message:failed.errorCode should match the ack: ${show(failed)}`);
      assert.equal(typeof failed.errorMessage, 'string', show(failed));
      assert.equal(typeof failed.retryable, 'boolean', show(failed));
      await expectNoEvent(a.socket, 'message:new', 500, (m) => m && m.content === content);
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
      await expectNoEvent(a.socket, 'message:update', 400);
      await expectNoEvent(a.socket, 'message:delete', 100);
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('message:send without content/room → VALIDATION_ERROR', async () => {
      const { socket } = await connectClient(server, { user: uid('v') });
      assertErr(await emitAck(socket, 'message:send', { content: 'no room' }), 'VALIDATION_ERROR', 'send without room');
      socket.disconnect();
    });
  });
}
});
