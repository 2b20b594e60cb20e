// docs/protocol.md §1, §2: handshake, identity, token sources and rejection, ping/pong, the early-emit race,
// auth:refresh / token expiry, dev tokens and anonymous mode.
import assert from 'node:assert/strict';
import { generateKeyPairSync, createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import jwt from 'jsonwebtoken';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, expectConnectError, makeClient, mintToken, JWT_SECRET,
  emitAck, waitFor, expectNoEvent, waitDisconnect, countEvents, assertOk, assertErr, assertIso, show, uid, join, sleep,
  http, API_KEY, eventually,
} from './harness.mjs';

const b64url = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

noteSkips();

// The server ends a session at its exact expiry deadline; waits for an expiry allow a loaded machine this much
// beyond it.
const CHECK_PERIOD = 5000;
// The Engine.IO ping interval of the first suite: short enough to see the first ping, long enough to tell it from
// a ping sent at the open.
const PING_INTERVAL = 1500;

for (const backend of backends()) {
describe(`handshake (JWT required, REALTIME_TOKEN_GRACE=1000, REALTIME_PING_INTERVAL=${PING_INTERVAL}) [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_TOKEN_GRACE: '1000', REALTIME_PING_INTERVAL: String(PING_INTERVAL) } });
  });
  after(() => shutdown(server));

  it('valid JWT in auth.token: `connected` then `authenticated` with the contract fields', async () => {
    const user = uid('alice');
    const before = Date.now();
    const { socket, connected, authenticated, order } = await connectClient(server, { user });
    assert.deepEqual(order.slice(0, 2), ['connected', 'authenticated'], `event order ${show(order)}`);
    assert.ok(connected && typeof connected === 'object', `connected payload: ${show(connected)}`);
    assert.equal(connected.socketId, socket.id, `connected.socketId must be the socket's id; connected=${show(connected)} socket.id=${socket.id}`);
    assertIso(connected.serverTime, 'connected.serverTime');
    assert.ok(Math.abs(Date.parse(connected.serverTime) - before) < 60_000, `serverTime far from now: ${show(connected)}`);
    assert.ok(connected.protocolVersion !== undefined && connected.protocolVersion !== null && connected.protocolVersion !== '',
      `connected.protocolVersion missing: ${show(connected)}`);
    assert.equal(authenticated.userId, user, `authenticated: ${show(authenticated)}`);
    assert.ok(typeof authenticated.sessionId === 'string' && authenticated.sessionId.length > 0,
      `authenticated.sessionId must be a server-made id when the token has none: ${show(authenticated)}`);
    assert.ok(Array.isArray(authenticated.rooms) && authenticated.rooms.every((r) => typeof r === 'string'),
      `authenticated.rooms must be string[]: ${show(authenticated)}`);
    socket.disconnect();
  });

  it('token via ?token= query', async () => {
    const user = uid('q');
    const { socket, authenticated } = await connectClient(server, { query: { token: mintToken(user) } });
    assert.equal(authenticated.userId, user, show(authenticated));
    socket.disconnect();
  });

  it('token via Authorization: Bearer header (polling transport)', async () => {
    const user = uid('hdr');
    const { socket, authenticated } = await connectClient(server, {
      transports: ['polling'],
      extraHeaders: { Authorization: `Bearer ${mintToken(user)}` },
    });
    assert.equal(authenticated.userId, user, show(authenticated));
    socket.disconnect();
  });

  it('auth.token takes precedence over ?token=', async () => {
    const a = uid('first');
    const b = uid('second');
    const { socket, authenticated } = await connectClient(server, { token: mintToken(a), query: { token: mintToken(b) } });
    assert.equal(authenticated.userId, a, show(authenticated));
    socket.disconnect();
  });

  it('no token → connect_error "Authentication required…"', async () => {
    const msg = await expectConnectError(server, {});
    assert.ok(msg.startsWith('Authentication required'), `connect_error message: ${show(msg)}`);
  });

  it('bad signature → connect_error "Invalid token…"', async () => {
    const msg = await expectConnectError(server, { token: mintToken(uid('u'), {}, { secret: 'not-the-secret' }) });
    assert.ok(msg.startsWith('Invalid token'), `connect_error message: ${show(msg)}`);
  });

  it('unsigned (alg=none) token is never decoded → "Invalid token…"', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'mallory', userId: 'mallory', exp: now + 3600 })}.`;
    const msg = await expectConnectError(server, { token });
    assert.ok(msg.startsWith('Invalid token'), `connect_error message: ${show(msg)}`);
  });

  it('expired token (beyond the grace) → "Invalid token…"', async () => {
    const now = Math.floor(Date.now() / 1000);
    const msg = await expectConnectError(server, { token: mintToken(uid('u'), { exp: now - 3600 }) });
    assert.ok(msg.startsWith('Invalid token'), `connect_error message: ${show(msg)}`);
  });

  it('nbf in the future → "Invalid token…"', async () => {
    const now = Math.floor(Date.now() / 1000);
    const msg = await expectConnectError(server, { token: mintToken(uid('u'), { nbf: now + 3600 }) });
    assert.ok(msg.startsWith('Invalid token'), `connect_error message: ${show(msg)}`);
  });

  it('dev token `user:alice` refused with a message naming REALTIME_ALLOW_DEV_TOKENS', async () => {
    const msg = await expectConnectError(server, { token: 'user:alice' });
    assert.ok(msg.startsWith('Invalid token'), `connect_error message: ${show(msg)}`);
    assert.ok(msg.includes('REALTIME_ALLOW_DEV_TOKENS'), `connect_error message should name REALTIME_ALLOW_DEV_TOKENS: ${show(msg)}`);
  });

  it('HS384 and HS512 tokens are accepted too', async () => {
    for (const algorithm of ['HS384', 'HS512']) {
      const u = uid(algorithm);
      const { socket, authenticated } = await connectClient(server, { token: mintToken(u, {}, { secret: JWT_SECRET, algorithm }) });
      assert.equal(authenticated.userId, u, `${algorithm}: ${show(authenticated)}`);
      socket.disconnect();
    }
  });

  it('user id: `userId` claim wins over `sub`', async () => {
    const u = uid('uid');
    const { socket, authenticated } = await connectClient(server, { token: mintToken(u, { sub: uid('sub') }) });
    assert.equal(authenticated.userId, u, show(authenticated));
    socket.disconnect();
  });

  it('user id from `sub` when there is no userId claim', async () => {
    const u = uid('sub');
    const { socket, authenticated } = await connectClient(server, { token: mintToken(u, { userId: undefined }) });
    assert.equal(authenticated.userId, u, show(authenticated));
    socket.disconnect();
  });

  it('user id from Hasura claims x-hasura-user-id (no userId/sub)', async () => {
    const u = uid('hasura');
    const token = mintToken(u, {
      userId: undefined,
      sub: undefined,
      'https://hasura.io/jwt/claims': { 'x-hasura-user-id': u, 'x-hasura-default-role': 'user', 'x-hasura-allowed-roles': ['user'] },
    });
    const { socket, authenticated } = await connectClient(server, { token });
    assert.equal(authenticated.userId, u, show(authenticated));
    socket.disconnect();
  });

  it('sessionId claim is echoed in `authenticated`', async () => {
    const sid = uid('sess');
    const { socket, authenticated } = await connectClient(server, { user: uid('s'), claims: { sessionId: sid } });
    assert.equal(authenticated.sessionId, sid, show(authenticated));
    socket.disconnect();
  });

  it('persisted rooms: rejoined on reconnect and listed in authenticated.rooms', async () => {
    const user = uid('persist');
    const other = uid('other');
    const room = uid('room');
    const first = await connectClient(server, { user });
    await join(first.socket, 'general');
    await join(first.socket, room);
    first.socket.disconnect();

    const again = await connectClient(server, { user });
    assert.ok(again.authenticated.rooms.includes('general'), `authenticated.rooms should include 'general': ${show(again.authenticated)}`);
    assert.ok(again.authenticated.rooms.includes(room), `authenticated.rooms should include '${room}': ${show(again.authenticated)}`);

    // and the socket really is in the room without joining again: it receives messages sent there
    const o = await connectClient(server, { user: other });
    await join(o.socket, room);
    const content = uid('hello-after-reconnect');
    const got = waitFor(again.socket, 'message:new', (m) => m && m.content === content);
    assertOk(await emitAck(o.socket, 'message:send', { roomName: room, content }), 'message:send');
    await got;
    again.socket.disconnect();
    o.socket.disconnect();
  });

  it('Engine.IO heartbeat: the first ping comes a ping interval after the open (not at once), and is answered', async () => {
    const socket = makeClient(server, { token: mintToken(uid('heartbeat')), autoConnect: false });
    let opened = null;
    socket.io.on('open', () => { opened = Date.now(); });
    const pinged = new Promise((resolve) => socket.io.once('ping', () => resolve(Date.now())));
    socket.connect();
    await waitFor(socket, 'authenticated');
    const at = await Promise.race([pinged, sleep(PING_INTERVAL + 10_000).then(() => null)]);
    assert.ok(opened !== null && at !== null, `no Engine.IO ping within ${PING_INTERVAL + 10_000} ms of the open`);
    assert.ok(at - opened >= PING_INTERVAL - 100,
      `the first ping came ${at - opened} ms after the open, before REALTIME_PING_INTERVAL=${PING_INTERVAL}`);
    // The client's pong kept the session: it is still connected after the ping's exchange.
    await sleep(200);
    assert.ok(socket.connected, 'the session ended after the first ping');
    socket.disconnect();
  });

  it('ping with an ack: the ack is the raw {timestamp} echoed (no envelope)', async () => {
    const { socket } = await connectClient(server, { user: uid('pinger') });
    const ts = Date.now() - 1234;
    const ack = await emitAck(socket, 'ping', { timestamp: ts });
    assert.ok(ack && typeof ack === 'object', `ping ack: ${show(ack)}`);
    assert.equal(ack.timestamp, ts, `ping ack must echo the client's timestamp: ${show(ack)}`);
    assert.equal(ack.success, undefined, `ping ack must not be enveloped: ${show(ack)}`);
    socket.disconnect();
  });

  it('ping without an ack → `pong {timestamp: server ms}`', async () => {
    const { socket } = await connectClient(server, { user: uid('pinger') });
    const p = waitFor(socket, 'pong');
    socket.emit('ping', { timestamp: 1 });
    const pong = await p;
    assert.ok(pong && typeof pong.timestamp === 'number', `pong payload: ${show(pong)}`);
    assert.ok(Math.abs(pong.timestamp - Date.now()) < 60_000, `pong.timestamp should be server epoch ms: ${show(pong)}`);
    const bare = waitFor(socket, 'pong', () => true, 3000);
    socket.emit('ping'); // no payload at all
    assert.equal(typeof (await bare).timestamp, 'number', 'a ping with no payload gets a pong too');
    socket.disconnect();
  });

  it('inbound `pong {timestamp}` is accepted silently; `pong` without payload → error VALIDATION_ERROR', async () => {
    const { socket } = await connectClient(server, { user: uid('ponger') });
    socket.emit('pong', { timestamp: Date.now() });
    await expectNoEvent(socket, 'error', 600);
    const errP = waitFor(socket, 'error');
    socket.emit('pong');
    const err = await errP;
    assert.equal(err?.code, 'VALIDATION_ERROR', `error event: ${show(err)}`);
    assert.equal(typeof err.message, 'string', show(err));
    // still connected and serving
    const ack = await emitAck(socket, 'ping', { timestamp: 7 });
    assert.equal(ack?.timestamp, 7, show(ack));
    socket.disconnect();
  });

  it('early-emit race: room:join emitted inside the `connect` handler is acked with success', async () => {
    const room = uid('early');
    let ackP;
    const { socket } = await connectClient(server, {
      user: uid('early'),
      onConnect: (s) => {
        ackP = emitAck(s, 'room:join', { roomName: room });
      },
    });
    const data = assertOk(await ackP, 'room:join emitted in connect handler');
    assert.equal(data?.roomName, room, show(data));
    socket.disconnect();
  });

  it('early-emit race: room:join emitted before the socket is even connected (client buffer) is acked', async () => {
    const room = uid('early2');
    const socket = makeClient(server, { token: mintToken(uid('early2')) });
    const ack = await emitAck(socket, 'room:join', { roomName: room }, 8000);
    const data = assertOk(ack, 'buffered room:join');
    assert.equal(data?.roomName, room, show(data));
    socket.disconnect();
  });

  it('auth:refresh with a valid token answers `authenticated` again (event and ack), keeping the sessionId', async () => {
    const user = uid('refresh');
    const { socket, authenticated: first } = await connectClient(server, { user, claims: { name: 'Before' } });
    const p = waitFor(socket, 'authenticated');
    const ack = await emitAck(socket, 'auth:refresh', { token: mintToken(user, { sessionId: 'refreshed', name: 'After' }) });
    const again = await p;
    assert.equal(again?.userId, user, show(again));
    assert.equal(again.sessionId, first.sessionId, `sessionId stays the one of the connection: ${show(again)}`);
    assert.deepEqual(assertOk(ack, 'auth:refresh'), again, 'the ack data is the authenticated payload');
    socket.disconnect();
  });

  it('auth:refresh with a bad token → auth:error INVALID_TOKEN; another user\'s token → USER_MISMATCH; both UNAUTHENTICATED', async () => {
    const user = uid('refresh-bad');
    const { socket } = await connectClient(server, { user });
    let p = waitFor(socket, 'auth:error');
    assertErr(await emitAck(socket, 'auth:refresh', { token: mintToken(user, {}, { secret: 'wrong' }) }), 'UNAUTHENTICATED', 'refresh with a bad signature');
    let err = await p;
    assert.equal(err.code, 'INVALID_TOKEN', show(err));
    assert.equal(typeof err.message, 'string', show(err));
    p = waitFor(socket, 'auth:error');
    assertErr(await emitAck(socket, 'auth:refresh', { token: mintToken(uid('someone-else')) }), 'UNAUTHENTICATED', 'refresh as another user');
    err = await p;
    assert.equal(err.code, 'USER_MISMATCH', show(err));
    // the session goes on as before
    assert.equal((await emitAck(socket, 'ping', { timestamp: 2 })).timestamp, 2);
    socket.disconnect();
  });

  it('session whose token expires (grace 1 s, no refresh) gets auth:error TOKEN_EXPIRED and is ended', async () => {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const { socket } = await connectClient(server, { token: mintToken(uid('exp'), { exp }) });
    const err = await waitFor(socket, 'auth:error', () => true, 3000 + CHECK_PERIOD + 10_000);
    assert.equal(err?.code, 'TOKEN_EXPIRED', `auth:error payload: ${show(err)}`);
    assert.equal(err.message, 'the token expired; reconnect with a new token', show(err));
    assert.ok(Date.now() >= (exp + 1) * 1000, `ended before exp + grace: ${Date.now() - (exp + 1) * 1000} ms early`);
    await waitDisconnect(socket, 5000);
  });

  it('a session refreshed before expiry is not ended, while one with the same exp and no refresh is', async () => {
    const user = uid('exp-refresh');
    const exp = Math.floor(Date.now() / 1000) + 2;
    const refreshed = await connectClient(server, { token: mintToken(user, { exp }) });
    const control = await connectClient(server, { token: mintToken(uid('control'), { exp }) });
    const p = waitFor(refreshed.socket, 'authenticated');
    refreshed.socket.emit('auth:refresh', { token: mintToken(user) });
    await p;
    // One expiry check sees both sessions: once it has ended the control, it has passed over the refreshed one.
    const err = await waitFor(control.socket, 'auth:error', () => true, 3000 + CHECK_PERIOD + 10_000);
    assert.equal(err.code, 'TOKEN_EXPIRED', show(err));
    await waitDisconnect(control.socket, 5000);
    await expectNoEvent(refreshed.socket, 'auth:error', 1000);
    assert.ok(refreshed.socket.connected, 'socket should still be connected after a refresh');
    assert.equal((await emitAck(refreshed.socket, 'ping', { timestamp: 4 })).timestamp, 4, 'and it still works');
    refreshed.socket.disconnect();
  });
});

describe(`token grace (REALTIME_TOKEN_GRACE=4000) [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_TOKEN_GRACE: '4000' } });
  });
  after(() => shutdown(server));

  it('a session outlives its token\'s exp, working, until exp + grace, and is ended soon after', async () => {
    const exp = Math.floor(Date.now() / 1000) + 1;
    const { socket } = await connectClient(server, { token: mintToken(uid('graceful'), { exp }) });
    const ended = waitFor(socket, 'auth:error', () => true, 6000 + CHECK_PERIOD + 15_000);
    // past exp: still served
    await sleep(Math.max(0, (exp + 1) * 1000 - Date.now()));
    assertOk(await emitAck(socket, 'room:join', { roomName: uid('after-exp') }), 'room:join after exp, within the grace');
    const err = await ended;
    const at = Date.now();
    assert.equal(err.code, 'TOKEN_EXPIRED', show(err));
    assert.ok(at >= (exp + 4) * 1000, `the session ended ${(exp + 4) * 1000 - at} ms before exp + grace`);
    assert.ok(at <= (exp + 5) * 1000 + CHECK_PERIOD + 10_000, `the session ended ${at - (exp + 5) * 1000} ms after exp + grace`);
    await waitDisconnect(socket, 5000);
  });

  it('a handshake with a token that expired less than the grace ago is admitted; beyond it, refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const { socket } = await connectClient(server, { token: mintToken(uid('late'), { exp: now - 1 }) });
    socket.disconnect();
    const msg = await expectConnectError(server, { token: mintToken(uid('too-late'), { exp: now - 30 }) });
    assert.ok(msg.startsWith('Invalid token'), msg);
  });
});

describe(`handshake with REALTIME_ALLOW_DEV_TOKENS=true, REALTIME_ALLOW_ANONYMOUS=true, REALTIME_TOKEN_GRACE=120000 [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({
      backend: backend.name,
      env: { REALTIME_ALLOW_DEV_TOKENS: 'true', REALTIME_ALLOW_ANONYMOUS: 'true', REALTIME_TOKEN_GRACE: '120000' },
    });
  });
  after(() => shutdown(server));

  it('dev token `user:<id>` is accepted', async () => {
    const id = uid('devalice');
    const { socket, authenticated } = await connectClient(server, { token: `user:${id}` });
    assert.equal(authenticated.userId, id, show(authenticated));
    socket.disconnect();
  });

  it('a token expired 30 s ago is accepted within the grace at the handshake', async () => {
    const u = uid('late');
    const now = Math.floor(Date.now() / 1000);
    const { socket, authenticated } = await connectClient(server, { token: mintToken(u, { exp: now - 30 }) });
    assert.equal(authenticated.userId, u, show(authenticated));
    socket.disconnect();
  });

  it('a bad token is still refused when anonymous mode is on', async () => {
    const msg = await expectConnectError(server, { token: mintToken('x', {}, { secret: 'wrong' }) });
    assert.ok(msg.startsWith('Invalid token'), `connect_error message: ${show(msg)}`);
  });

  it('anonymous socket: connected, may join a public room and read, may not write', async () => {
    const room = uid('anonroom');
    // a user creates the public room (anonymous sockets need not be able to create rooms)
    const { socket: writer } = await connectClient(server, { user: uid('writer') });
    await join(writer, room);
    const anon = await connectClient(server, { anonymous: true });
    assert.equal(anon.connected.socketId, anon.socket.id, show(anon.connected));
    assert.equal(countEvents(anon.socket, 'authenticated'), 0, 'an anonymous socket gets no `authenticated`');
    await join(anon.socket, room);
    const content = uid('for-anon');
    const got = waitFor(anon.socket, 'message:new', (m) => m && m.content === content);
    assertOk(await emitAck(writer, 'message:send', { roomName: room, content }), 'writer message:send');
    await got;

    const ack = await emitAck(anon.socket, 'message:send', { roomName: room, content: 'anon write' });
    assertErr(ack, 'UNAUTHENTICATED', 'anonymous message:send');
    for (const [event, payload] of [['typing:start', { roomName: room }], ['presence:update', { status: 'online' }], ['sync:channels', {}], ['auth:refresh', { token: mintToken(uid('x')) }]]) {
      assertErr(await emitAck(anon.socket, event, payload), 'UNAUTHENTICATED', `anonymous ${event}`);
    }
    // anonymous sockets never create rooms
    assertErr(await emitAck(anon.socket, 'room:join', { roomName: uid('anon-made') }), 'ROOM_NOT_FOUND', 'anonymous join of a missing room');
    anon.socket.disconnect();
    writer.disconnect();
  });
});

for (const [alg, genArgs] of [
  ['RS256', ['rsa', { modulusLength: 2048 }]],
  ['ES256', ['ec', { namedCurve: 'P-256' }]],
]) {
  describe(`handshake with REALTIME_JWT_PUBLIC_KEY (${alg} PEM) [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    const { publicKey, privateKey } = generateKeyPairSync(...genArgs);
    const pub = publicKey.export({ type: 'spki', format: 'pem' });
    const priv = privateKey.export({ type: 'pkcs8', format: 'pem' });
    const other = generateKeyPairSync(...genArgs).privateKey.export({ type: 'pkcs8', format: 'pem' });
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_JWT_PUBLIC_KEY: pub } });
    });
    after(() => shutdown(server));

    it(`${alg} token signed with the matching private key is accepted`, async () => {
      const u = uid(alg.toLowerCase());
      const { socket, authenticated } = await connectClient(server, { token: mintToken(u, {}, { secret: priv, algorithm: alg }) });
      assert.equal(authenticated.userId, u, show(authenticated));
      socket.disconnect();
    });

    it(`${alg} token signed with another key → "Invalid token…"`, async () => {
      const msg = await expectConnectError(server, { token: mintToken(uid('x'), {}, { secret: other, algorithm: alg }) });
      assert.ok(msg.startsWith('Invalid token'), `connect_error message: ${show(msg)}`);
    });
  });
}

// Token attacks (issue: reliability and security, item 2). Each is refused at the handshake and on
// auth:refresh with "Invalid token: <reason>": a short class, never the JWT library's words (which can list
// the accepted algorithms); the detail goes to the server's log once.
describe(`token attacks, at the handshake and on auth:refresh [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsaPub = rsa.publicKey.export({ type: 'spki', format: 'pem' });
  const hsSigned = (claims, secret) => {
    const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
    return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
  };
  const now = () => Math.floor(Date.now() / 1000);
  // [what, token for user u, the refusal]
  const attacks = (u) => [
    ['alg none', `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: u, userId: u, exp: now() + 3600 })}.`, 'malformed token'],
    ['wrong key', mintToken(u, {}, { secret: 'not-the-secret' }), 'bad signature'],
    ['HS256 signed with the RSA public key PEM', hsSigned({ sub: u, userId: u, exp: now() + 3600 }, rsaPub), 'bad signature'],
    ['expired beyond the grace', mintToken(u, { exp: now() - 3600 }), 'token expired'],
    ['nbf in the future', mintToken(u, { nbf: now() + 3600 }), 'token not yet valid (nbf)'],
    ['no user claim', mintToken(u, { sub: undefined, userId: undefined }), 'no user id claim (userId, sub or x-hasura-user-id)'],
    ['oversized', mintToken(u, { pad: 'x'.repeat(17 * 1024) }), 'token too long'],
    ['malformed base64', 'eyJ!!!.@@@.###', 'malformed token'],
    ['a user id with a control character', mintToken(`${u}\u0007x`), 'user id contains control characters'],
    ['a user id over 256 bytes', mintToken(`${u}${'é'.repeat(130)}`), 'user id is longer than 256 bytes'],
  ];
  const internals = /HS256|HS384|RS256|ES256|algorithm[s]? \[|InvalidSignature|ImmatureSignature|Base64|REALTIME_JWT/;

  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_JWT_PUBLIC_KEY: rsaPub } });
  });
  after(() => shutdown(server));

  it('each forged or unusable token is refused at the handshake with "Invalid token: <reason>" and nothing internal', async () => {
    for (const [what, token, reason] of attacks(uid('m'))) {
      const msg = await expectConnectError(server, { token });
      assert.equal(msg, `Invalid token: ${reason}`, `${what}: ${show(msg)}`);
      assert.doesNotMatch(msg, internals, `${what}: the refusal shows no internals`);
    }
    // the library's detail is in the log, not in the answer
    assert.match(server.logs(200_000), /token refused.*InvalidSignature|InvalidSignature.*token refused/, 'the detail is logged');
  });

  it('each is refused on auth:refresh too (auth:error INVALID_TOKEN, ack UNAUTHENTICATED), and the session goes on', async () => {
    const user = uid('r');
    const { socket } = await connectClient(server, { user });
    try {
      for (const [what, token, reason] of attacks(user)) {
        const told = waitFor(socket, 'auth:error');
        const ack = await emitAck(socket, 'auth:refresh', { token });
        assertErr(ack, 'UNAUTHENTICATED', `refresh with ${what}`);
        const err = await told;
        assert.equal(err.code, 'INVALID_TOKEN', `${what}: ${show(err)}`);
        assert.equal(err.message, `Invalid token: ${reason}`, `${what}: ${show(err)}`);
        assert.doesNotMatch(JSON.stringify(ack), internals, `${what}: the ack shows no internals`);
      }
      assert.equal((await emitAck(socket, 'ping', { timestamp: 7 })).timestamp, 7, 'still connected');
      assertOk(await emitAck(socket, 'auth:refresh', { token: mintToken(user) }), 'a good refresh after all that');
    } finally {
      socket.disconnect();
    }
  });
});

describe(`REALTIME_JWT_ALGORITHMS=HS512, REALTIME_JWT_AUDIENCE, REALTIME_JWT_ISSUER [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  const iss = 'https://auth.example.test';
  before(async () => {
    server = await startServer({
      backend: backend.name,
      env: { REALTIME_JWT_ALGORITHMS: 'HS512', REALTIME_JWT_AUDIENCE: 'realtime,chat', REALTIME_JWT_ISSUER: iss },
    });
  });
  after(() => shutdown(server));
  const hs512 = (u, extra) => mintToken(u, extra, { secret: JWT_SECRET, algorithm: 'HS512' });

  it('a token of the allowed algorithm, issuer and an allowed audience connects (aud as a string or a list)', async () => {
    for (const aud of ['realtime', ['other', 'chat']]) {
      const u = uid('ok');
      const { socket, authenticated } = await connectClient(server, { token: hs512(u, { aud, iss }) });
      assert.equal(authenticated.userId, u, show(authenticated));
      socket.disconnect();
    }
  });

  it('another algorithm (even with the right secret), audience or issuer is refused, saying which check failed', async () => {
    const u = uid('no');
    for (const [what, token, reason] of [
      ['HS256 with the right secret', mintToken(u, { aud: 'realtime', iss }), 'algorithm not accepted'],
      ['no aud', hs512(u, { iss }), 'wrong audience'],
      ['another aud', hs512(u, { aud: 'billing', iss }), 'wrong audience'],
      ['no iss', hs512(u, { aud: 'realtime' }), 'wrong issuer'],
      ['another iss', hs512(u, { aud: 'realtime', iss: 'https://evil.test' }), 'wrong issuer'],
    ]) {
      const msg = await expectConnectError(server, { token });
      assert.equal(msg, `Invalid token: ${reason}`, `${what}: ${show(msg)}`);
      assert.doesNotMatch(msg, /HS512|HS256/, `${what}: the accepted algorithms are not shown`);
    }
  });
});

describe(`LOG_LEVEL=debug writes no token, key or secret [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { LOG_LEVEL: 'debug' } });
  });
  after(() => shutdown(server));

  it('tokens sent every way (auth, ?token=, Authorization over polling, auth:refresh, HTTP), refused ones and API keys never reach the log', async () => {
    const user = uid('logged');
    const tokens = [mintToken(user, { n: 1 }), mintToken(user, { n: 2 }), mintToken(user, { n: 3 }), mintToken(user, { n: 4 }), mintToken(user, { n: 5 })];
    const bad = mintToken(user, {}, { secret: 'not-the-secret' });
    const room = uid('room');
    const a = await connectClient(server, { token: tokens[0] });
    const b = await connectClient(server, { query: { token: tokens[1] } });
    const c = await connectClient(server, { transports: ['polling'], extraHeaders: { Authorization: `Bearer ${tokens[2]}` } });
    try {
      await join(a.socket, room);
      await join(c.socket, room);
      assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: 'hello' }), 'send');
      assertOk(await emitAck(c.socket, 'message:send', { roomName: room, content: 'over polling' }), 'send');
      assertOk(await emitAck(b.socket, 'auth:refresh', { token: tokens[3] }), 'refresh');
      assertErr(await emitAck(b.socket, 'auth:refresh', { token: bad }), 'UNAUTHENTICATED', 'a bad refresh');
      await expectConnectError(server, { token: bad });
      const sent = await http(server, 'POST', '/messages', { headers: { Authorization: `Bearer ${tokens[4]}` }, body: { roomName: room, content: 'http' } });
      assert.ok(sent.status < 300, show(sent.body));
      assert.equal((await http(server, 'GET', '/api/stats', { apiKey: API_KEY })).status, 200);
      assert.equal((await http(server, 'GET', '/api/stats', { apiKey: `${API_KEY}x` })).status, 401);
    } finally {
      for (const x of [a, b, c]) x.socket.disconnect();
    }
    // the last request's line is in: everything before it is too
    await eventually('the wrong key logged', () => /wrong API key/.test(server.output));
    const logs = server.output;
    assert.match(logs, /DEBUG/, 'the server did log at debug');
    const secrets = [...tokens, bad, JWT_SECRET, API_KEY];
    // a token's signature alone, or its payload, is as good as the token for this check
    for (const t of [...tokens, bad]) secrets.push(...t.split('.').filter((part) => part.length > 20));
    const found = secrets.filter((x) => logs.includes(x));
    assert.deepEqual(found, [], `secrets in the log (${logs.length} bytes of output)`);
  });
});

describe(`REALTIME_JWKS_URL: keys from the auth service, rotated without a restart [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  let jwks;
  let hits = 0;
  let served;
  const INTERVAL = 1500;
  const key = (kid) => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    return { kid, priv: privateKey.export({ type: 'pkcs8', format: 'pem' }), jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' } };
  };
  const a = key('key-a');
  const b = key('key-b');
  const sign = (k, user, kid = k.kid) => jwt.sign({ sub: user, userId: user, exp: Math.floor(Date.now() / 1000) + 3600 }, k.priv, { algorithm: 'RS256', keyid: kid });
  // A symmetric key published in a JWKS would let anyone sign: it must never verify anything.
  const octSecret = 'published-for-all-to-see';
  const oct = { kty: 'oct', k: Buffer.from(octSecret).toString('base64url'), kid: 'hmac', alg: 'HS256', use: 'sig' };

  before(async () => {
    served = [a.jwk, oct];
    jwks = createServer((req, res) => {
      hits += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: served }));
    });
    await new Promise((r) => jwks.listen(0, '127.0.0.1', r));
    server = await startServer({
      backend: backend.name,
      env: {
        REALTIME_JWKS_URL: `http://127.0.0.1:${jwks.address().port}/.well-known/jwks.json`,
        REALTIME_JWKS_REFRESH_INTERVAL: String(INTERVAL),
        REALTIME_JWT_SECRET: undefined, // the JWKS is the only source of keys
      },
    });
  });
  after(async () => {
    await shutdown(server);
    await new Promise((r) => jwks.close(r));
  });

  it('a token signed by the JWKS key connects; its symmetric key verifies nothing; forged kids are refused and fetch at most once per interval; a rotated key is accepted without a restart, the withdrawn one refused', async () => {
    assert.ok(hits >= 1, 'the keys are fetched at start');
    const u = uid('jwks');
    const first = await connectClient(server, { token: sign(a, u) });
    assert.equal(first.authenticated.userId, u, show(first.authenticated));

    const before = hits;
    const started = Date.now();
    for (let i = 0; i < 20; i++) {
      const msg = await expectConnectError(server, { token: sign(a, uid('forged'), `forged-${i}`) });
      assert.equal(msg, 'Invalid token: unknown signing key', show(msg));
    }
    const allowed = Math.ceil((Date.now() - started) / INTERVAL) + 1;
    assert.ok(hits - before <= allowed, `20 forged kids in ${Date.now() - started} ms fetched the JWKS ${hits - before} times (at most ${allowed})`);

    // the JWKS's symmetric key verifies nothing, whatever the token's kid says
    const hs = jwt.sign({ sub: 'mallory', userId: 'mallory' }, octSecret, { algorithm: 'HS256', keyid: 'hmac' });
    assert.equal(await expectConnectError(server, { token: hs }), 'Invalid token: algorithm not accepted');
    assert.equal(await expectConnectError(server, { token: sign(a, uid('x'), 'hmac') }), 'Invalid token: unknown signing key');

    // the auth service rotates: b replaces a
    served = [b.jwk, oct];
    const v = uid('rotated');
    const second = await eventually('the rotated key accepted', async () => {
      try {
        return await connectClient(server, { token: sign(b, v) });
      } catch (e) {
        return { done: false, error: e.message };
      }
    });
    assert.equal(second.authenticated.userId, v, show(second.authenticated));
    assertOk(await emitAck(second.socket, 'auth:refresh', { token: sign(b, v) }), 'auth:refresh with the new key');
    const told = waitFor(first.socket, 'auth:error');
    assertErr(await emitAck(first.socket, 'auth:refresh', { token: sign(a, u) }), 'UNAUTHENTICATED', 'refresh with the withdrawn key');
    assert.equal((await told).message, 'Invalid token: unknown signing key');
    assert.equal(await expectConnectError(server, { token: sign(a, uid('old')) }), 'Invalid token: unknown signing key');
    first.socket.disconnect();
    second.socket.disconnect();
  });
});
}

// An https:// JWKS: the auth service's certificate is checked against the system's certificate authorities, or
// the bundle SSL_CERT_FILE names. One database is enough: nothing here touches storage.
describe('REALTIME_JWKS_URL over https: trusted through SSL_CERT_FILE, refused (and logged) when its CA is unknown', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nself-rt-jwks-tls-'));
  const pem = (name) => path.join(dir, name);
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const priv = privateKey.export({ type: 'pkcs8', format: 'pem' });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'tls-key', alg: 'RS256', use: 'sig' };
  const sign = (user) => jwt.sign({ sub: user, userId: user, exp: Math.floor(Date.now() / 1000) + 3600 }, priv, { algorithm: 'RS256', keyid: 'tls-key' });
  let jwks;
  let hits = 0;
  const servers = [];

  before(async () => {
    // A private CA and a certificate for 127.0.0.1 signed by it (a CA certificate cannot serve as its own leaf).
    const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-subj', '/CN=test CA', '-keyout', 'ca.key', '-out', 'ca.pem');
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1',
      '-keyout', 'leaf.key', '-out', 'leaf.csr');
    writeFileSync(pem('leaf.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    ssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1',
      '-extfile', 'leaf.ext', '-out', 'leaf.pem');
    jwks = createHttpsServer({ key: readFileSync(pem('leaf.key')), cert: readFileSync(pem('leaf.pem')) }, (req, res) => {
      hits += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise((r) => jwks.listen(0, '127.0.0.1', r));
  });
  after(async () => {
    for (const s of servers) await shutdown(s);
    await new Promise((r) => jwks.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  const start = async (env) => {
    const s = await startServer({
      env: { REALTIME_JWKS_URL: `https://127.0.0.1:${jwks.address().port}/.well-known/jwks.json`, REALTIME_JWT_SECRET: undefined, ...env },
    });
    servers.push(s);
    return s;
  };

  it('with the CA in SSL_CERT_FILE the keys are fetched over TLS and a token signed by them connects', async () => {
    const server = await start({ SSL_CERT_FILE: pem('ca.pem') });
    await eventually('the keys loaded', () => /JWKS keys loaded/.test(server.output));
    const u = uid('tls');
    const c = await connectClient(server, { token: sign(u) });
    assert.equal(c.authenticated.userId, u, show(c.authenticated));
    c.socket.disconnect();
  });

  it('without it the certificate is not trusted: nothing is fetched, tokens are refused, the log says why', async () => {
    const before = hits;
    const server = await start({ SSL_CERT_FILE: undefined }); // the system's authorities only
    await eventually('the failed fetch logged', () => /JWKS fetch failed/.test(server.output));
    assert.match(server.output, /certificate/i, 'the log names the certificate as the cause');
    assert.equal(await expectConnectError(server, { token: sign(uid('tls')) }), 'Invalid token: unknown signing key');
    assert.equal(hits, before, 'no JWKS was served over an untrusted connection');
  });
});
