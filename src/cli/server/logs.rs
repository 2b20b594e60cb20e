//! `server logs [-n N] [-f]`: the last lines of the background server's log file, optionally following it.
//! (Under systemd the server logs to the journal instead: `journalctl -u realtime`.)

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many of the last lines to show.
    #[arg(short = 'n', long = "lines", default_value_t = 50)]
    lines: usize,
    /// Keep printing lines as they are written (until Ctrl-C).
    #[arg(short = 'f', long)]
    follow: bool,
}

pub async fn run(args: Args, cfg: &Config) -> anyhow::Result<ExitCode> {
    let path = cfg.log_file();
    if !path.exists() && !args.follow {
        eprintln!(
            "no log file at {} (the server writes it when started with `server start`; under systemd see \
             `journalctl -u realtime`)",
            path.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    let mut pos = match std::fs::File::open(&path) {
        Ok(mut f) => {
            let (text, end) = tail(&mut f, args.lines)?;
            out.write_all(&text)?;
            out.flush()?;
            end
        }
        Err(_) => 0,
    };
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        pos = follow_once(&path, pos, &mut out)?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The last `n` lines of the file and the file's length (where following starts).
fn tail(f: &mut std::fs::File, n: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let len = f.metadata()?.len();
    // Read backwards in blocks until n line breaks (plus the one ending the last line) are in hand.
    let mut start = len;
    let mut buf = Vec::new();
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= n {
        let step = start.min(64 * 1024);
        start -= step;
        f.seek(SeekFrom::Start(start))?;
        let mut block = vec![0; step as usize];
        f.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
    }
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let cut = body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(n.saturating_sub(1)).map(|(i, _)| i + 1);
    let from = if n == 0 { buf.len() } else { cut.unwrap_or(0) };
    Ok((buf[from..].to_vec(), len))
}

/// Prints what was appended since `pos`; starts over when the file was truncated or replaced.
fn follow_once(path: &Path, pos: u64, out: &mut impl Write) -> std::io::Result<u64> {
    let Ok(mut f) = std::fs::File::open(path) else { return Ok(0) };
    let len = f.metadata()?.len();
    let pos = if len < pos { 0 } else { pos };
    if len == pos {
        return Ok(pos);
    }
    f.seek(SeekFrom::Start(pos))?;
    let mut chunk = Vec::new();
    f.take(len - pos).read_to_end(&mut chunk)?;
    out.write_all(&chunk)?;
    out.flush()?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(content: &str, n: usize) -> String {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        String::from_utf8(tail(&mut f, n).unwrap().0).unwrap()
    }

    #[test]
    fn tail_takes_the_last_lines() {
        assert_eq!(tail_of("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_of("a\nb\nc\n", 5), "a\nb\nc\n");
        assert_eq!(tail_of("a\nb\nc", 1), "c");
        assert_eq!(tail_of("a\nb\nc\n", 0), "");
        assert_eq!(tail_of("", 3), "");
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail_of(&long, 2), "line 19998\nline 19999\n");
    }
}
