// A flooding client in its own process (so its event loop does not delay the measured clients):
// node flooder.mjs <url> <token> <room> <events per second> <ms>. Joins <room> and prints `joined`; on a line
// `go` on stdin sends message:send at the rate for the time, waits for every ack and prints
// {sent, ok, limited, other} as JSON.
import { io } from 'socket.io-client';

const [url, token, room, rate, ms] = process.argv.slice(2);
const socket = io(url, { transports: ['websocket'], reconnection: false, auth: { token } });
socket.on('connect_error', (e) => {
  console.error(`flooder: ${e.message}`);
  process.exit(2);
});
socket.on('authenticated', () => {
  socket.emit('room:join', { roomName: room }, () => {
    process.stdout.write('joined\n');
    process.stdin.once('data', () => flood());
  });
});

function flood() {
    const counts = { sent: 0, ok: 0, limited: 0, other: 0 };
    const started = Date.now();
    let stopped = false;
    const done = () => counts.ok + counts.limited + counts.other === counts.sent;
    const timer = setInterval(() => {
      const elapsed = Date.now() - started;
      const due = Math.floor((Math.min(elapsed, Number(ms)) * Number(rate)) / 1000) - counts.sent;
      for (let i = 0; i < due; i++) {
        counts.sent++;
        socket.emit('message:send', { roomName: room, content: `flood ${counts.sent}` }, (ack) => {
          if (ack?.success) counts.ok++;
          else if (ack?.error?.code === 'RATE_LIMITED') counts.limited++;
          else counts.other++;
          if (stopped && done()) finish();
        });
      }
      if (elapsed >= Number(ms)) {
        stopped = true;
        clearInterval(timer);
        if (done()) finish();
      }
    }, 5);
    let finished = false;
    function finish() {
      if (finished) return;
      finished = true;
      process.stdout.write(`${JSON.stringify(counts)}\n`);
      socket.disconnect();
      process.exit(0);
    }
}
