// docs/protocol.md §13.1 and the served dialect's fixes, driven the way nchat's services/realtime drives it
// (`auth {token, device}`): presence answers show the live state and nobody is left holding a state that did
// not last; a privacy change racing a publication always reaches the viewer (repeated many times); a refused
// auth:refresh is one signal; channel:join answers channel:joined once per room; dm typing in a dm the server
// has not seen is learned from both participants (or the admin API) and reaches nobody before. SQLite and
// PostgreSQL.
import { describe, it, before, after } from './harness.mjs';
import assert from 'node:assert/strict';
import {
  backends, noteSkips, startServer, shutdown, emitAck, assertOk, assertErr, waitFor, show, uid, sleep, http, API_KEY,
  mintToken, countEvents,
} from './harness.mjs';
import { stack, seen, got, nothing, settled } from './dialects.mjs';

noteSkips();

const DEVICE = { device: { type: 'web', os: 'linux', browser: 'chromium' } };
const contract = (server, user) => stack(server, user, { auth: DEVICE });
// The coalescing window: 400 ms after the latest change, at most 2000 ms after the first (fixed).
const WINDOW = 2000;

/** What a viewer holds about `user`: the last answer or announcement it received. */
function held(socket, user) {
  let last = null;
  for (const r of socket.received) {
    if (r.event === 'presence:bulk') last = r.args[0].presences.find((p) => p.userId === user) ?? last;
    if (r.event === 'presence:changed' && r.args[0].userId === user) last = r.args[0];
  }
  return last?.status ?? null;
}

async function get(socket, ids) {
  return assertOk(await emitAck(socket, 'presence:get', { userIds: ids }), 'presence:get').presences;
}

for (const backend of backends()) {
  describe(`contract dialect [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name });
    });
    after(() => shutdown(server));

    it('a user who connected a moment ago reads as online, in presence:get, presence:subscribe and GET /presence', async () => {
      const room = `channel:${uid('c')}`;
      const [viewer, dora] = [uid('viewer'), uid('dora')];
      const V = (await contract(server, viewer)).socket;
      assertOk(await emitAck(V, 'room:join', { roomName: room }));
      const D = (await contract(server, dora)).socket;
      assertOk(await emitAck(D, 'room:join', { roomName: room }));
      // well inside the coalescing window of dora's connection
      const [p] = await get(V, [dora]);
      assert.equal(p.status, 'online', `presence:get right after connecting: ${show(p)}`);
      V.emit('presence:subscribe', { userIds: [dora] });
      assert.equal((await waitFor(V, 'presence:bulk')).presences[0].status, 'online');
      const res = await http(server, 'GET', `/presence/${encodeURIComponent(room)}?userId=${viewer}`, { apiKey: API_KEY });
      assert.equal(res.status, 200, show(res.body));
      assert.equal(res.body.users.find((u) => u.userId === dora)?.status, 'online', show(res.body));
      // when the window closes, nothing contradicts what the viewer was told
      await sleep(WINDOW + 300);
      await nothing(V, ['presence:changed'], { ms: 0, pred: (e) => e.userId === dora && e.status !== 'online', what: 'the viewer:' });
      assert.equal(held(V, dora), 'online');
    });

    it('an answer inside the window that the window reverts is set right when it closes', async () => {
      const [viewer, dora] = [uid('viewer'), uid('dora')];
      const V = (await contract(server, viewer)).socket;
      const D = (await contract(server, dora)).socket;
      V.emit('presence:subscribe', { userIds: [dora] });
      await sleep(WINDOW + 300); // dora's connection is published
      assert.equal(held(V, dora), 'online');
      // dora flickers: appear-offline, then online again, inside one window; the viewer asks in between
      assertOk(await emitAck(D, 'presence:update', { status: 'offline' }));
      const mark = V.received.length;
      V.emit('presence:subscribe', { userIds: [dora] });
      const between = await waitFor(V, 'presence:bulk', (b) => b.presences[0].userId === dora);
      assert.equal(between.presences[0].status, 'offline', 'the live state at that moment');
      assertOk(await emitAck(D, 'presence:update', { status: 'online' }));
      // nothing changed for anyone else, but this viewer was told `offline`: it hears `online` again
      const fixed = await waitFor(V, 'presence:changed', (e) => e.userId === dora, WINDOW + 1500);
      assert.equal(fixed.status, 'online', show(got(V, 'presence:changed', () => true, mark)));
      assert.equal(held(V, dora), 'online');
    });

    it('invisibleMode racing the connection\'s announcement: the subscriber always ends with offline (40 runs at staggered times)', async () => {
      const runs = 40;
      const results = await Promise.all(
        Array.from({ length: runs }, async (_, i) => {
          const [viewer, bea] = [uid(`v${i}`), uid(`b${i}`)];
          const A = (await contract(server, viewer)).socket;
          A.emit('presence:subscribe', { userIds: [bea] });
          await waitFor(A, 'presence:bulk');
          const B = (await contract(server, bea)).socket;
          await sleep(300 + ((i * 7) % 280)); // around the publication of the connection, 400 ms after it
          assertOk(await emitAck(B, 'presence:settings', { invisibleMode: true }), 'presence:settings');
          await sleep(WINDOW + 600);
          const seenByA = got(A, 'presence:changed', (e) => e.userId === bea).map((e) => e.status);
          A.disconnect();
          B.disconnect();
          return { i, held: held(A, bea), seenByA };
        }),
      );
      const wrong = results.filter((r) => r.held !== 'offline');
      assert.deepEqual(wrong, [], `viewers left holding a status the invisible user does not show: ${show(wrong)}`);
    });

    it('a refused auth:refresh is one signal (auth:error); channel:join answers channel:joined once per room', async () => {
      const user = uid('u');
      const U = (await contract(server, user)).socket;
      const mark = U.received.length;
      const err = waitFor(U, 'auth:error');
      U.emit('auth:refresh', { token: 'not-a-token' });
      assert.equal((await err).code, 'INVALID_TOKEN');
      U.emit('auth:refresh', { token: mintToken(uid('other')) });
      assert.equal((await waitFor(U, 'auth:error')).code, 'USER_MISMATCH');
      await settled(U);
      await nothing(U, ['error'], { from: mark, ms: 200, what: 'a refused refresh:' });

      const channelId = uid('c');
      assertOk(await emitAck(U, 'channel:join', { channelId }));
      assertOk(await emitAck(U, 'channel:join', { channelId }));
      await sleep(200);
      assert.equal(countEvents(U, 'channel:joined', (e) => e.channelId === channelId), 1);
      assertOk(await emitAck(U, 'channel:leave', { channelId }));
      assertOk(await emitAck(U, 'channel:join', { channelId }));
      await seen(U, 'channel:joined', (e) => e.channelId === channelId && countEvents(U, 'channel:joined') === 2);
    });

    it('dm typing in a dm the server has not seen: nobody hears one side\'s claim; both sides\' use binds it', async () => {
      const [ann, ben, eve] = [uid('ann'), uid('ben'), uid('eve')];
      const A = (await contract(server, ann)).socket;
      const B = (await contract(server, ben)).socket;
      const E = (await contract(server, eve)).socket;
      const dmId = crypto.randomUUID(); // nchat's dm ids are its backend's uuids
      const typingAbout = (s, u) => got(s, 'typing:event', (e) => e.users.some((x) => x.userId === u));

      // typing.service.ts startTypingInDM(dmId, recipientId): one side's claim reaches nobody, without an error
      assertOk(await emitAck(A, 'typing:start', { roomName: dmId, roomType: 'dm', recipientId: ben }), 'first claim');
      A.emit('typing:stop', { roomName: dmId, roomType: 'dm' });
      // eve names ben as her recipient in made-up and in real dm ids: nothing reaches ben
      for (const id of [crypto.randomUUID(), dmId]) {
        assertOk(await emitAck(E, 'typing:start', { roomName: id, roomType: 'dm', recipientId: ben }), 'eve');
      }
      await sleep(500);
      assert.deepEqual([...typingAbout(B, ann), ...typingAbout(B, eve)], [], 'no typing before both sides used the dm');
      await nothing(A, ['error'], { ms: 0, what: 'dm typing in an unknown dm:' });
      await nothing(E, ['error'], { ms: 0, what: 'dm typing in an unknown dm:' });

      // ben types in the same dm, naming ann: the pair is confirmed, and his typing reaches her
      const toAnn = waitFor(A, 'typing:event', (e) => e.roomName === dmId && e.users.some((x) => x.userId === ben));
      assertOk(await emitAck(B, 'typing:start', { roomName: dmId, roomType: 'dm', recipientId: ann }), 'second claim');
      assert.equal((await toAnn).roomType, 'dm');
      const toBen = waitFor(B, 'typing:event', (e) => e.roomName === dmId && e.users.some((x) => x.userId === ann));
      A.emit('typing:start', { roomName: dmId, roomType: 'dm', recipientId: ben });
      await toBen;
      // the dm is stored with its two members; eve still reaches nobody through it
      const members = await http(server, 'GET', `/api/rooms/${encodeURIComponent(`dm:${dmId}`)}/members`, { apiKey: API_KEY });
      assert.deepEqual(members.body.members.map((m) => m.userId).sort(), [ann, ben].sort(), show(members.body));
      assertOk(await emitAck(E, 'typing:start', { roomName: dmId, roomType: 'dm', recipientId: ann }), 'eve again');
      await sleep(400);
      assert.deepEqual([...typingAbout(A, eve), ...typingAbout(B, eve)], []);

      // a dm the backend created through the admin API works at once
      const dm2 = crypto.randomUUID();
      const name = `dm:${dm2}`;
      assert.equal((await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name, type: 'dm', visibility: 'private' } })).status, 201);
      for (const u of [ann, eve]) {
        assert.equal((await http(server, 'POST', `/api/rooms/${encodeURIComponent(name)}/members`, { apiKey: API_KEY, body: { userId: u } })).status, 201);
      }
      const toEve = waitFor(E, 'typing:event', (e) => e.roomName === dm2 && e.users.some((x) => x.userId === ann));
      assertOk(await emitAck(A, 'typing:start', { roomName: dm2, roomType: 'dm', recipientId: eve }));
      await toEve;
      // the canonical dm names keep their rule: a stranger is refused
      assertErr(await emitAck(E, 'typing:start', { roomName: [ann, ben].sort().join(':'), roomType: 'dm' }), 'NOT_A_MEMBER');
    });
  });
}
