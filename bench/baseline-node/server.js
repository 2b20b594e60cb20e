// Baseline server for `nself-realtime bench`: a minimal Node.js socket.io server (default settings)
// that speaks the same events as nself-realtime, without persistence, policy, coalescing or limits.
//
//  - CONNECT with auth {token}: verified as an HS256 JWT when REALTIME_JWT_SECRET (or JWT_SECRET) is
//    set (node:crypto, no extra package), otherwise any token is accepted. Emits `connected`, then
//    `authenticated`.
//  - room:join / room:leave {roomName} -> ack {success, data}
//  - message:send {roomName, content, metadata?} -> message:new to the room (sender included), ack
//  - typing:start / typing:stop {roomName, roomType} -> typing:event to channel:<roomName> (others)
//  - presence:update {status} -> presence:changed to every room of the socket (others)
//
// Listens on $HOST (default 127.0.0.1) : $PORT (default 3103).
'use strict';
const http = require('node:http');
const crypto = require('node:crypto');
const { Server } = require('socket.io');

const SECRET = process.env.REALTIME_JWT_SECRET || process.env.JWT_SECRET || '';
const PORT = Number(process.env.PORT || 3103);
const HOST = process.env.HOST || '127.0.0.1';
let seq = 0;

function b64url(buf) {
  return buf.toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

function userFromToken(token) {
  if (!SECRET) return String(token).slice(0, 64);
  const parts = String(token).split('.');
  if (parts.length !== 3) throw new Error('Invalid token: malformed');
  const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
  if (header.alg !== 'HS256') throw new Error('Invalid token: unsupported alg');
  const sig = b64url(crypto.createHmac('sha256', SECRET).update(parts[0] + '.' + parts[1]).digest());
  const a = Buffer.from(sig);
  const b = Buffer.from(parts[2]);
  if (a.length !== b.length || !crypto.timingSafeEqual(a, b)) throw new Error('Invalid token: bad signature');
  const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  if (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now()) throw new Error('Invalid token: expired');
  const user = claims.userId || claims.sub;
  if (!user) throw new Error('Invalid token: no user id');
  return String(user);
}

const httpServer = http.createServer((req, res) => {
  if (req.url === '/health') { res.writeHead(200); res.end('ok'); return; }
  res.writeHead(404); res.end();
});
const io = new Server(httpServer, { cors: { origin: '*' } });

io.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (!token) return next(new Error('Authentication required'));
  try {
    socket.data.userId = userFromToken(token);
    next();
  } catch (e) {
    next(new Error(e.message.startsWith('Invalid token') ? e.message : 'Invalid token: ' + e.message));
  }
});

const nowIso = () => new Date().toISOString();
const ok = (ack, data) => { if (typeof ack === 'function') ack({ success: true, data }); };
const fail = (ack, code, message) => {
  if (typeof ack === 'function') ack({ success: false, error: { code, message } });
};

io.on('connection', (socket) => {
  const userId = socket.data.userId;
  socket.join('user:' + userId);

  socket.on('room:join', (req, ack) => {
    if (!req || typeof req.roomName !== 'string') return fail(ack, 'VALIDATION_ERROR', 'roomName required');
    socket.join(req.roomName);
    const i = req.roomName.indexOf(':');
    ok(ack, { roomName: req.roomName, type: i > 0 ? req.roomName.slice(0, i) : 'channel' });
  });
  socket.on('room:leave', (req, ack) => {
    if (!req || typeof req.roomName !== 'string') return fail(ack, 'VALIDATION_ERROR', 'roomName required');
    socket.leave(req.roomName);
    ok(ack, { roomName: req.roomName });
  });
  socket.on('message:send', (req, ack) => {
    if (!req || typeof req.roomName !== 'string' || typeof req.content !== 'string') {
      return fail(ack, 'VALIDATION_ERROR', 'roomName and content required');
    }
    seq += 1;
    const id = 'm' + seq;
    const now = nowIso();
    io.to(req.roomName).emit('message:new', {
      id, messageId: id, roomName: req.roomName, userId, content: req.content, type: 'text',
      metadata: req.metadata, seq, createdAt: now, timestamp: now,
    });
    ok(ack, { messageId: id, seq, createdAt: now });
  });
  for (const [ev, typing] of [['typing:start', true], ['typing:stop', false]]) {
    socket.on(ev, (req) => {
      if (!req || typeof req.roomName !== 'string') return;
      socket.to('channel:' + req.roomName).emit('typing:event', {
        roomName: req.roomName, roomType: req.roomType || 'channel',
        users: typing ? [{ userId, startedAt: nowIso() }] : [],
      });
    });
  }
  socket.on('presence:update', (req) => {
    if (!req || typeof req.status !== 'string') return;
    const rooms = [...socket.rooms].filter((r) => r !== socket.id);
    if (rooms.length) socket.to(rooms).emit('presence:changed', { userId, status: req.status });
  });

  socket.emit('connected', { socketId: socket.id, serverTime: nowIso(), protocolVersion: 5 });
  socket.emit('authenticated', { userId, sessionId: socket.id, rooms: [] });
});

httpServer.listen(PORT, HOST, () => {
  console.error(`baseline-node listening on ${HOST}:${PORT}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
