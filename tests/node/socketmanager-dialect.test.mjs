// docs/protocol.md §13.4: nchat's socketManager (lib/realtime/socket-manager.ts, typed-events.ts, the
// delivery handler, hooks/use-typing), which connects with `{token}` only (compat). Its acks
// `{success, messageId?, error?}`, `message:typing`, the bare `ping` heartbeat, and the delivery retry that
// re-sends a message as an inbound `message:new {clientMessageId, …}`. Its provider treats any `error` event
// as a broken connection, so its routine events are never answered with one. SQLite and PostgreSQL.
import { describe, it, before, after } from './harness.mjs';
import assert from 'node:assert/strict';
import { backends, noteSkips, startServer, shutdown, emitAck, waitFor, show, uid } from './harness.mjs';
import { stack, seen, got, nothing, fresh, settled } from './dialects.mjs';

noteSkips();

const TYPING_TIMEOUT = 1500;

// socketManager's own options (socket-manager.ts createSocket): polling first, then the upgrade
const TRANSPORTS = ['polling', 'websocket'];

for (const backend of backends()) {
  describe(`socketManager dialect [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_TYPING_TIMEOUT: String(TYPING_TIMEOUT) } });
    });
    after(() => shutdown(server));

    async function pair() {
      const channelId = uid('c');
      const alice = uid('alice');
      const bob = uid('bob');
      const A = (await stack(server, alice, { transports: TRANSPORTS })).socket;
      const B = (await stack(server, bob, { transports: TRANSPORTS })).socket;
      const a = await emitAck(A, 'channel:join', { channelId });
      assert.equal(a.success, true, show(a));
      const memberJoin = waitFor(A, 'channel:member_join', (e) => e.userId === bob && e.channelId === channelId);
      assert.equal((await emitAck(B, 'channel:join', { channelId })).success, true);
      await memberJoin;
      return { channelId, alice, bob, A, B };
    }

    it('message:send acks {success, messageId}; edits and deletes reach the room in its shapes', async () => {
      const { channelId, alice, A, B } = await pair();
      const content = uid('hi');
      const theirs = waitFor(B, 'message:new', (m) => m.content === content);
      const ack = await emitAck(A, 'message:send', { channelId, content });
      assert.equal(ack.success, true, show(ack));
      assert.equal(typeof ack.messageId, 'string', `messageId at the top of the ack: ${show(ack)}`);
      const m = await theirs;
      assert.equal(m.id, ack.messageId);
      assert.equal(m.authorId, alice, show(m));
      assert.equal(m.channelId, channelId);
      fresh(m.createdAt, 'createdAt');
      // delivery: bob is in the channel, so alice hears it was delivered
      const d = await seen(A, 'message:delivered', (e) => e.messageId === m.id);
      assert.equal(d.deliveredCount, 1, show(d));
      fresh(d.deliveredAt, 'deliveredAt');

      const upd = waitFor(B, 'message:update', (e) => e.id === m.id);
      assert.equal((await emitAck(A, 'message:edit', { messageId: m.id, content: 'edited' })).success, true);
      const u = await upd;
      assert.equal(u.content, 'edited');
      assert.equal(u.authorId, alice);
      assert.equal(u.isEdited, true);
      fresh(u.updatedAt, 'updatedAt');
      fresh(u.createdAt, 'createdAt');
      const del = waitFor(B, 'message:delete', (e) => e.messageId === m.id);
      assert.equal((await emitAck(A, 'message:delete', { messageId: m.id })).success, true);
      assert.equal((await del).channelId, channelId);
    });

    it('the delivery retry (inbound message:new with a clientMessageId) is idempotent and answered with message:sent', async () => {
      const { channelId, A, B } = await pair();
      const clientMessageId = `msg_${Date.now()}_${uid('').slice(-9)}`;
      const content = uid('retry');
      const theirs = waitFor(B, 'message:new', (m) => m.content === content);
      const sent = waitFor(A, 'message:sent', (e) => e.clientMessageId === clientMessageId);
      A.emit('message:new', { clientMessageId, channelId, content });
      const first = await sent;
      fresh(first.sentAt, 'sentAt');
      const m = await theirs;
      assert.equal(m.id, first.messageId);
      const mark = B.received.length;
      const again = waitFor(A, 'message:sent', (e) => e.clientMessageId === clientMessageId);
      A.emit('message:new', { clientMessageId, channelId, content });
      assert.equal((await again).messageId, first.messageId, 'the same message');
      await nothing(B, ['message:new'], { from: mark, ms: 400, what: 'a retried message:' });
      // a refused retry tells message:failed, never a generic error
      const failed = waitFor(A, 'message:failed', (e) => e.clientMessageId === 'msg_bad');
      A.emit('message:new', { clientMessageId: 'msg_bad', channelId });
      const f = await failed;
      assert.equal(f.errorCode, 'VALIDATION_ERROR', show(f));
      await nothing(A, ['error'], { ms: 200, what: 'socketManager:' });
    });

    it('message:typing: the typer is the socket\'s user (not the payload\'s), false on stop and on the timeout; ping is silent', async () => {
      const { channelId, alice, A, B } = await pair();
      const on = waitFor(B, 'message:typing', (e) => e.userId === alice && e.isTyping === true);
      A.emit('message:typing', { channelId, userId: 'mallory', isTyping: true });
      assert.deepEqual(await on, { channelId, userId: alice, isTyping: true });
      assert.equal(got(B, 'message:typing', (e) => e.userId === 'mallory').length, 0);
      const off = waitFor(B, 'message:typing', (e) => e.userId === alice && e.isTyping === false);
      A.emit('message:typing', { channelId, isTyping: false });
      await off;
      const again = waitFor(B, 'message:typing', (e) => e.userId === alice && e.isTyping === true);
      A.emit('message:typing', { channelId, isTyping: true });
      await again;
      await waitFor(B, 'message:typing', (e) => e.userId === alice && e.isTyping === false, TYPING_TIMEOUT + 2500);

      // the heartbeat: a bare ping, no ack, answered at most with pong; typing in a channel the socket is
      // not in is refused quietly (an `error` would flip the provider to "error")
      const mark = A.received.length;
      A.emit('ping');
      A.emit('message:typing', { channelId: uid('elsewhere'), isTyping: true });
      await settled(A);
      await nothing(A, ['error'], { from: mark, ms: 300, what: 'heartbeat and routine typing:' });
    });
  });
}
