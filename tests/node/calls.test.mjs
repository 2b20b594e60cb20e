// docs/protocol.md §13.5: the WebRTC call signalling of nchat's lib/webrtc/signaling.ts relayed between the
// users of a call, with its exact payloads (CallOfferPayload, CallIceCandidatePayload, …): routed by call id
// and user, the sender must take part (or be invited) and be who it says, refusals as `call:error`, the
// description passed on unchanged, a call whose peers are gone ends. SQLite and PostgreSQL.
import { describe, it, before, after } from './harness.mjs';
import assert from 'node:assert/strict';
import { backends, noteSkips, startServer, shutdown, waitFor, show, uid } from './harness.mjs';
import { stack, seen, got, nothing, fresh, settled } from './dialects.mjs';

noteSkips();

const RING = 1500;
const callId = () => `call-${Date.now()}-${uid('').slice(-9)}`;
const sdp = (type) => ({ type, sdp: `v=0\r\no=- ${Date.now()} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n` });

for (const backend of backends()) {
  describe(`call signalling [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_CALL_RING_TIMEOUT: String(RING) } });
    });
    after(() => shutdown(server));

    async function three() {
      const alice = uid('alice');
      const bob = uid('bob');
      const carol = uid('carol');
      const A = (await stack(server, alice)).socket;
      const B = (await stack(server, bob)).socket;
      const C = (await stack(server, carol)).socket;
      return { alice, bob, carol, A, B, C };
    }

    it('CallManager flow: initiate rings, the offer and ICE go to the addressee unchanged, accept joins, end is relayed', async () => {
      const { alice, bob, carol, A, B, C } = await three();
      // bob also has a services/realtime socket: it knows no call events and gets none
      const Bc = (await stack(server, bob, { auth: { device: { type: 'web' } } })).socket;
      const id = callId();
      const ringB = waitFor(B, 'call:ring', (e) => e.callId === id);
      const ringA = waitFor(A, 'call:ring', (e) => e.callId === id);
      A.emit('call:initiate', { callId: id, targetUserId: bob, callType: 'video' });
      const ring = await ringB;
      assert.equal(ring.callerId, alice);
      assert.equal(ring.callType, 'video');
      assert.equal(typeof ring.callerName, 'string');
      await ringA; // the caller's feedback ("it rings on the other side")

      const offer = { callId: id, fromUserId: alice, toUserId: bob, sdp: sdp('offer') };
      const gotOffer = waitFor(B, 'call:offer', (e) => e.callId === id);
      A.emit('call:offer', offer);
      assert.deepEqual(await gotOffer, offer, 'relayed exactly as sent');

      const accepted = waitFor(A, 'call:accept', (e) => e.callId === id);
      const joined = waitFor(A, 'call:participant:joined', (e) => e.callId === id);
      B.emit('call:accept', { callId: id, userId: bob });
      assert.deepEqual(await accepted, { callId: id, userId: bob });
      const p = (await joined).participant;
      assert.equal(p.id, bob);
      assert.equal(typeof p.name, 'string');
      assert.deepEqual([p.isMuted, p.isVideoEnabled, p.isScreenSharing], [false, true, false], show(p));
      fresh(p.joinedAt, 'joinedAt');

      const answer = { callId: id, fromUserId: bob, toUserId: alice, sdp: sdp('answer') };
      const gotAnswer = waitFor(A, 'call:answer', (e) => e.callId === id);
      B.emit('call:answer', answer);
      assert.deepEqual(await gotAnswer, answer);
      const ice = {
        callId: id, fromUserId: alice, toUserId: bob,
        candidate: { candidate: 'candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host', sdpMid: '0', sdpMLineIndex: 0 },
      };
      const gotIce = waitFor(B, 'call:ice-candidate', (e) => e.callId === id);
      for (let i = 0; i < 30; i++) A.emit('call:ice-candidate', { ...ice, n: i }); // a trickle burst
      assert.deepEqual(await gotIce, { ...ice, n: 0 });
      const mute = { callId: id, userId: alice, enabled: false };
      const gotMute = waitFor(B, 'call:mute:changed', (e) => e.callId === id);
      A.emit('call:mute:changed', mute);
      assert.deepEqual(await gotMute, mute);

      // an outsider, and a spoofed sender: call:error to them, nothing to anyone else
      const markB = B.received.length;
      const e1 = waitFor(C, 'call:error', (e) => e.callId === id && e.code === 'FORBIDDEN');
      C.emit('call:offer', { callId: id, fromUserId: carol, toUserId: bob, sdp: sdp('offer') });
      await e1;
      const e2 = waitFor(C, 'call:error', (e) => e.callId === id && e.code === 'FORBIDDEN');
      C.emit('call:offer', { callId: id, fromUserId: alice, toUserId: bob, sdp: sdp('offer') });
      assert.match((await e2).message, /fromUserId/);
      await nothing(B, ['call:offer'], { from: markB, ms: 300, what: 'bob, from carol:' });
      await nothing(C, ['error'], { ms: 0, what: 'call refusals are call:error only:' });
      assert.equal(got(B, 'call:ice-candidate', (e) => e.callId === id).length >= 1, true);

      const end = { callId: id, endedBy: alice, reason: 'completed', duration: 12 };
      const gotEnd = waitFor(B, 'call:end', (e) => e.callId === id);
      A.emit('call:end', end);
      assert.deepEqual(await gotEnd, end);
      const after = waitFor(A, 'call:error', (e) => e.callId === id && e.code === 'NOT_FOUND');
      A.emit('call:answer', { callId: id, fromUserId: alice, toUserId: bob, sdp: sdp('answer') });
      await after;
      await settled(Bc);
      assert.deepEqual(Bc.received.filter((r) => r.event.startsWith('call:')), [], 'a contract socket gets no call events');
    });

    it('use-call flow: the offer opens the call; the callee\'s last socket going ends it with participant:left and call:end (network)', async () => {
      const { alice, bob, A, B } = await three();
      const B2 = (await stack(server, bob)).socket; // bob on a second tab
      const id = callId();
      const offer = { callId: id, fromUserId: alice, toUserId: bob, sdp: sdp('offer') };
      const o1 = waitFor(B, 'call:offer', (e) => e.callId === id);
      const o2 = waitFor(B2, 'call:offer', (e) => e.callId === id);
      A.emit('call:offer', offer);
      await o1;
      await o2;
      B.emit('call:accept', { callId: id, userId: bob });
      await waitFor(A, 'call:participant:joined', (e) => e.callId === id);
      const mark = A.received.length;
      B2.disconnect();
      await nothing(A, ['call:participant:left', 'call:end'], { from: mark, ms: 500, what: 'bob still has a socket:' });
      const left = waitFor(A, 'call:participant:left', (e) => e.callId === id);
      const ended = waitFor(A, 'call:end', (e) => e.callId === id);
      B.disconnect();
      assert.equal((await left).participant.id, bob);
      const e = await ended;
      assert.equal(e.endedBy, bob);
      assert.equal(e.reason, 'network');
    });

    it('an unanswered call times out for both; the callee may decline instead', async () => {
      const { alice, bob, A, B } = await three();
      const id = callId();
      A.emit('call:initiate', { callId: id, targetUserId: bob, callType: 'voice' });
      const tA = waitFor(A, 'call:timeout', (e) => e.callId === id, RING + 3000);
      const tB = waitFor(B, 'call:timeout', (e) => e.callId === id, RING + 3000);
      assert.deepEqual(await tA, { callId: id });
      await tB;

      const id2 = callId();
      A.emit('call:initiate', { callId: id2, targetUserId: bob, callType: 'voice' });
      await seen(B, 'call:ring', (e) => e.callId === id2);
      const declined = waitFor(A, 'call:decline', (e) => e.callId === id2);
      B.emit('call:decline', { callId: id2, userId: bob, reason: 'busy' });
      assert.deepEqual(await declined, { callId: id2, userId: bob, reason: 'busy' });
      const gone = waitFor(A, 'call:error', (e) => e.callId === id2 && e.code === 'NOT_FOUND');
      A.emit('call:end', { callId: id2, endedBy: alice, reason: 'declined' });
      await gone;
      await nothing(A, ['call:timeout'], { ms: RING + 300, pred: (e) => e.callId === id2, what: 'a declined call:' });
    });
  });
}
