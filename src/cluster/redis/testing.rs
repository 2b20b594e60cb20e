//! A throwaway `redis-server` for the Redis backends' tests: its own free port, nothing saved, killed when
//! dropped (and by the kernel if the test process dies first). Each `redis()` handle has its own key prefix,
//! so one server can hold several independent states.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Redis;

pub struct RedisServer {
    child: Child,
    port: u16,
}

static NEXT_PREFIX: AtomicU64 = AtomicU64::new(0);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl RedisServer {
    /// Starts `redis-server` and returns once it accepts connections.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            // SAFETY: prctl is async-signal-safe; the child dies with the thread that started it.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (Debian: apt-get install redis-server)")
            });
            let out = child.stdout.take().expect("piped");
            let mut lines = BufReader::new(out).lines();
            let mut log = Vec::new();
            let ready = lines.by_ref().map_while(Result::ok).any(|l| {
                log.push(l.clone());
                l.contains("Ready to accept connections")
            });
            if ready {
                // Keep draining the log, so the server never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return RedisServer { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
            if !log.iter().any(|l| l.contains("Address already in use")) {
                panic!("redis-server did not start:\n{}", log.join("\n"));
            }
        }
        panic!("redis-server found no free port");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A handle with a prefix of its own.
    pub async fn redis(&self) -> Redis {
        let client = ::redis::Client::open(self.url()).expect("url");
        let conn = ::redis::aio::ConnectionManager::new(client).await.expect("connect to the test redis-server");
        let n = NEXT_PREFIX.fetch_add(1, Ordering::Relaxed);
        Redis::from_connection(conn, &format!("test-{}-{n}", std::process::id()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
