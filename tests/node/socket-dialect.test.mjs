// docs/protocol.md §13.4: nchat's lib/socket (the mounted SocketProvider and its hooks), which connects with
// `{token}` only and so gets the compat dialect. Its exact payloads and listeners (lib/socket/events.ts,
// hooks/use-typing, use-presence, use-channel-events, use-read-receipts, use-notifications): joins sent twice
// per mount, typing:start/stop with server times, message:send with a tempId and mention objects and no ack,
// presence:update in its shape, and refusals as `error {code, message}`. Run against SQLite and PostgreSQL.
import { describe, it, before, after } from './harness.mjs';
import assert from 'node:assert/strict';
import { backends, noteSkips, startServer, shutdown, waitFor, show, uid, countEvents } from './harness.mjs';
import { stack, seen, got, nothing, fresh, settled } from './dialects.mjs';

noteSkips();

const TYPING_TIMEOUT = 1500;

/** Two lib/socket clients in one channel, joined the way useChannelEvents joins (twice per mount). */
async function pair(server) {
  const channelId = uid('c');
  const alice = uid('alice');
  const bob = uid('bob');
  const A = (await stack(server, alice)).socket;
  const B = (await stack(server, bob)).socket;
  for (const s of [A, B]) s.emit('presence:update', { status: 'online' }); // the provider, on every connect
  A.emit('channel:join', { channelId });
  A.emit('channel:join', { channelId });
  await seen(A, 'channel:joined', (e) => e.channelId === channelId);
  B.emit('channel:join', { channelId });
  B.emit('channel:join', { channelId });
  await seen(B, 'channel:joined', (e) => e.channelId === channelId);
  await settled(A);
  await settled(B);
  return { channelId, alice, bob, A, B };
}

for (const backend of backends()) {
  describe(`lib/socket dialect [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_TYPING_TIMEOUT: String(TYPING_TIMEOUT) } });
    });
    after(() => shutdown(server));

    it('joins twice per mount: one channel:joined each, one channel:member:join to the others, none about oneself', async () => {
      const { channelId, alice, bob, A, B } = await pair(server);
      const join = await seen(A, 'channel:member:join', (e) => e.userId === bob);
      assert.equal(join.channelId, channelId, 'the bare channel id the hook compares with');
      fresh(join.joinedAt, 'joinedAt');
      assert.equal(join.user?.id, bob, show(join));
      assert.equal(typeof join.user?.displayName, 'string', show(join));
      await nothing(A, ['error'], { ms: 300, what: 'no refusal of the repeated join:' });
      assert.equal(countEvents(A, 'channel:member:join', (e) => e.userId === bob), 1, 'one member join per user');
      assert.equal(countEvents(A, 'channel:joined', (e) => e.channelId === channelId), 1, 'channel:joined once');
      assert.equal(countEvents(B, 'channel:member:join', (e) => e.userId === bob), 0, 'nobody hears about themself');
      assert.equal(countEvents(A, 'channel:member:join', (e) => e.userId === alice), 0);
      // socketManager's underscore names ride along (same trigger)
      await seen(A, 'channel:member_join', (e) => e.userId === bob && e.channelId === channelId);
      // and the contract's own event is still there, unchanged (a {token}-only client may read either)
      await seen(A, 'user:joined', (e) => e.userId === bob && e.roomName === `channel:${channelId}`);

      const mark = A.received.length;
      B.emit('channel:leave', { channelId });
      const left = await waitFor(A, 'channel:member:leave', (e) => e.userId === bob);
      assert.equal(left.channelId, channelId);
      fresh(left.leftAt, 'leftAt');
      await seen(A, 'channel:member_leave', (e) => e.userId === bob);
      assert.equal(got(A, 'channel:member:leave', () => true, mark).length, 1);
    });

    it('typing:start / typing:stop with server times and the typer\'s user; threads apart; the timeout pushes a stop', async () => {
      const { channelId, alice, A, B } = await pair(server);
      const markA = A.received.length;
      const start = waitFor(B, 'typing:start', (e) => e.userId === alice);
      A.emit('typing:start', { channelId });
      const s = await start;
      assert.equal(s.channelId, channelId);
      fresh(s.startedAt, 'startedAt');
      assert.deepEqual(Object.keys(s.user).sort(), ['displayName', 'id'], show(s));
      assert.equal(s.user.id, alice);
      assert.ok(!('threadId' in s), `channel typing carries no threadId: ${show(s)}`);
      const list = await seen(B, 'typing:channel', (e) => e.channelId === channelId && e.users.length === 1);
      assert.equal(list.users[0].userId, alice);
      fresh(list.users[0].startedAt, 'typing:channel startedAt');

      const stop = waitFor(B, 'typing:stop', (e) => e.userId === alice);
      A.emit('typing:stop', { channelId });
      const st = await stop;
      assert.equal(st.channelId, channelId);
      fresh(st.stoppedAt, 'stoppedAt');
      // the typer's own sockets never hear that they started (a stop about themselves is ignored by the hook)
      await nothing(A, ['typing:start'], { from: markA, pred: (e) => e.userId === alice, ms: 0, what: 'the typer:' });

      // a thread: threadId on the events; the timeout pushes the stop (the client's hook waits for it)
      const tStart = waitFor(B, 'typing:start', (e) => e.userId === alice && e.threadId === 't-1');
      A.emit('typing:start', { channelId, threadId: 't-1' });
      await tStart;
      const expired = await waitFor(B, 'typing:stop', (e) => e.userId === alice && e.threadId === 't-1', TYPING_TIMEOUT + 2500);
      assert.equal(expired.channelId, channelId);
      // the contract's list event is still sent to this {token}-only socket
      await seen(B, 'typing:event', (e) => e.roomName === channelId);
    });

    it('message:send with a tempId and mention objects: the sender\'s copy alone carries the tempId; a retry is not sent twice', async () => {
      const { channelId, alice, bob, A, B } = await pair(server);
      const content = uid('hello');
      const tempId = uid('tmp');
      const mine = waitFor(A, 'message:new', (m) => m.content === content);
      const theirs = waitFor(B, 'message:new', (m) => m.content === content);
      A.emit('message:send', { tempId, channelId, content, mentions: [{ type: 'user', id: 'bob' }] });
      const m = await mine;
      const b = await theirs;
      assert.equal(m.tempId, tempId, `the sender's copy: ${show(m)}`);
      assert.ok(!('tempId' in b), `others get no tempId: ${show(b)}`);
      for (const x of [m, b]) {
        assert.equal(x.channelId, channelId);
        assert.equal(x.userId, alice);
        assert.equal(x.authorId, alice, 'socketManager reads authorId');
        fresh(x.createdAt, 'createdAt');
        assert.deepEqual(x.mentions, [{ type: 'user', id: 'bob' }], 'mentions pass through as sent');
      }
      assert.equal(m.id, b.id);
      const mark = B.received.length;
      A.emit('message:send', { tempId, channelId, content });
      await settled(A);
      await nothing(B, ['message:new'], { from: mark, what: 'a retried tempId:' });
      await nothing(A, ['error'], { ms: 0, what: 'lib/socket sends:' });

      // reactions and reads in lib/socket's shapes
      const added = waitFor(A, 'reaction:add', (e) => e.messageId === m.id);
      B.emit('reaction:add', { messageId: m.id, channelId, emoji: '👍' });
      const r = await added;
      assert.equal(r.channelId, channelId);
      assert.equal(r.emoji, '👍');
      fresh(r.addedAt, 'addedAt');
      const removed = waitFor(A, 'reaction:remove', (e) => e.messageId === m.id);
      B.emit('reaction:remove', { messageId: m.id, channelId, emoji: '👍' });
      fresh((await removed).removedAt, 'removedAt');
      const read = waitFor(A, 'read:update', (e) => e.messageId === m.id);
      const readers = waitFor(A, 'read:message', (e) => e.messageId === m.id);
      B.emit('read:update', { channelId, messageId: m.id });
      const rd = await read;
      assert.equal(rd.channelId, channelId);
      fresh(rd.readAt, 'readAt');
      assert.ok(!('threadId' in rd), show(rd));
      const rm = await readers; // the full list: useReadReceipts replaces the message's readers with it
      assert.deepEqual(rm.readers.map((x) => x.userId), [bob], show(rm));
      fresh(rm.readers[0].readAt, 'readers[].readAt');

      // a refusal: `error {code, message}` (the only thing lib/socket could read)
      const err = waitFor(A, 'error', (e) => e.code === 'VALIDATION_ERROR');
      A.emit('message:send', { tempId: uid('bad'), channelId });
      assert.equal(typeof (await err).message, 'string');
    });

    it('presence: subscribe answers presence:bulk and one presence:update per user; changes arrive as presence:update (dnd, text statuses)', async () => {
      const { alice, A, B } = await pair(server);
      const upd = waitFor(B, 'presence:update', (e) => e.userId === alice && e.status === 'online');
      const bulk = waitFor(B, 'presence:bulk');
      B.emit('presence:subscribe', { userIds: [alice] });
      const bk = await bulk;
      assert.equal(bk.presences?.[0]?.userId, alice, show(bk));
      await upd;

      const dnd = waitFor(B, 'presence:update', (e) => e.userId === alice && e.status === 'dnd');
      A.emit('presence:update', { status: 'dnd', customStatus: 'Focus', customEmoji: '🎧' });
      const d = await dnd;
      assert.equal(d.customStatus, 'Focus', show(d));
      assert.equal(d.customEmoji, '🎧', show(d));
      const away = waitFor(B, 'presence:update', (e) => e.userId === alice && e.status === 'away');
      A.emit('user:status', { status: 'away' });
      await away;
      // the contract's event keeps coming too, with its own status word
      await seen(B, 'presence:changed', (e) => e.userId === alice && e.status === 'busy');

      const mark = A.received.length;
      A.emit('notification:read', { notificationId: 'n-1' });
      A.emit('notification:read:all');
      A.emit('presence:unsubscribe', { userIds: ['nobody'] });
      await settled(A);
      await nothing(A, ['error'], { from: mark, ms: 200, what: 'notifications:' });
    });
  });
}
