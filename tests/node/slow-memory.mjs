// Memory held for clients that stop reading: PAUSED members of a room of MEMBERS stop reading their TCP sockets
// while a publisher sends RATE messages/s of SIZE bytes; prints the server's resident memory (VmRSS) before and
// at most while they are paused, and when each was closed. A measurement, not a test (RELIABILITY.md, "Slow
// consumer", has its figures). The server's environment comes from this process's (e.g. REALTIME_BIN,
// REALTIME_MAX_BUFFER_BYTES=0 for no byte bound).
//
//   node slow-memory.mjs [seconds paused, default 20]
import { readFileSync } from 'node:fs';
import {
  startServer, shutdown, connectClient, uid, join, http, API_KEY, listOf, sleep,
} from './harness.mjs';

const MEMBERS = 20;
const PAUSED = 10;
const RATE = 50;
const SIZE = 15_000;
const SECONDS = Number(process.argv[2] || 20);

const rss = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const env = { REALTIME_RATE_LIMIT_POINTS: '1000000' };
for (const k of ['REALTIME_MAX_BUFFER_BYTES', 'REALTIME_WRITE_TIMEOUT', 'REALTIME_MAX_BUFFER', 'REALTIME_PING_INTERVAL', 'REALTIME_PING_TIMEOUT']) {
  if (process.env[k]) env[k] = process.env[k];
}
const server = await startServer({ backend: 'sqlite', env });
const pid = server.proc.pid;
try {
  const room = uid('mem');
  const sockets = [];
  for (let i = 0; i < MEMBERS + PAUSED + 1; i++) {
    const c = await connectClient(server, { user: uid(`u${i}`) });
    await join(c.socket, room);
    sockets.push(c.socket);
  }
  const publisher = sockets[MEMBERS + PAUSED];
  const paused = sockets.slice(MEMBERS, MEMBERS + PAUSED);
  let sent = 0;
  const padding = 'x'.repeat(SIZE - 14);
  const timer = setInterval(() => {
    for (let i = 0; i < RATE / 10; i++) {
      sent++;
      publisher.emit('message:send', { roomName: room, content: `${Date.now()}|${padding}` });
    }
  }, 100);
  await sleep(3000);
  const before = rss(pid);
  for (const s of paused) {
    const tcp = s.io.engine.transport.ws._socket;
    tcp.pause();
    tcp.resume = () => tcp;
  }
  const pausedAt = Date.now();
  const sentAtPause = sent;
  const ids = new Set(paused.map((s) => s.id));
  const closedAt = new Map();
  let max = before;
  while (Date.now() - pausedAt < SECONDS * 1000) {
    await sleep(250);
    max = Math.max(max, rss(pid));
    const conns = listOf((await http(server, 'GET', '/api/connections', { apiKey: API_KEY })).body, 'connections');
    const open = new Set(conns.map((c) => c.socketId));
    for (const id of ids) if (!open.has(id) && !closedAt.has(id)) closedAt.set(id, Date.now() - pausedAt);
  }
  clearInterval(timer);
  const closed = [...closedAt.values()].sort((a, b) => a - b);
  console.log(`REALTIME_MAX_BUFFER_BYTES=${env.REALTIME_MAX_BUFFER_BYTES ?? '(default)'} ` +
    `REALTIME_WRITE_TIMEOUT=${env.REALTIME_WRITE_TIMEOUT ?? '(default)'}: ${PAUSED} of ${MEMBERS + PAUSED} members paused ` +
    `${SECONDS} s, ${sent - sentAtPause} messages of ${SIZE} B sent meanwhile; RSS ${before.toFixed(1)} MiB before, ` +
    `at most ${max.toFixed(1)} MiB (+${(max - before).toFixed(1)} MiB), ${rss(pid).toFixed(1)} MiB at the end; ` +
    `closed: ${closed.length} (after ${closed.length ? `${closed[0]}–${closed[closed.length - 1]} ms` : '-'})`);
  for (const s of sockets) s.disconnect();
} finally {
  await shutdown(server);
}
process.exit(0);
