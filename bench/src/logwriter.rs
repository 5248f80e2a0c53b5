//! `bench-log-writer`: the dyno program of `bench-logs`. Std only, so it copies into a slug and
//! runs anywhere (also inside an isolated dyno). Every line it writes is exactly `LINE_BYTES`
//! bytes, newline included.
//!
//! Both modes first print `MODE-start` and wait a second, so the reader can take its baseline
//! after the dyno's start has settled.
//! - `flood N [--exit]`: N numbered lines (`flood 0000000001 xxx…`) as fast as stdout takes them,
//!   then one `flood-done N NANOS` line (its own writing time), then sleeps (a worker that exits
//!   would be restarted and flood again) unless `--exit`.
//! - `paced RATE SECS [--exit]`: RATE lines a second for SECS seconds, each
//!   `lat 0000000001 UNIX_NANOS xxx…` with the wall clock just before its write, one write per
//!   line; then `paced-done COUNT`, then sleeps unless `--exit`.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LINE_BYTES: usize = 100;

/// `head` padded with `x` to `LINE_BYTES - 1` bytes, plus the newline.
fn fill(buf: &mut Vec<u8>, head: std::fmt::Arguments<'_>) {
    buf.clear();
    buf.write_fmt(head).expect("writing to a Vec");
    buf.resize(LINE_BYTES - 1, b'x');
    buf.push(b'\n');
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn usage() -> ! {
    eprintln!("usage: bench-log-writer flood N [--exit] | paced RATE SECS [--exit]");
    std::process::exit(2);
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exit = args.iter().any(|a| a == "--exit");
    let stdout = std::io::stdout();
    let mut line = Vec::with_capacity(LINE_BYTES);
    let mode = args.first().map(String::as_str);
    if let Some(m @ ("flood" | "paced")) = mode {
        fill(&mut line, format_args!("{m}-start "));
        let mut out = stdout.lock();
        let _ = out.write_all(&line).and_then(|()| out.flush());
        std::thread::sleep(Duration::from_secs(1));
    }
    match mode {
        Some("flood") => {
            let n: u64 = arg(&args, 1);
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
            let t0 = Instant::now();
            for i in 1..=n {
                fill(&mut line, format_args!("flood {i:010} "));
                if out.write_all(&line).is_err() {
                    std::process::exit(1);
                }
            }
            let _ = out.flush();
            let took = t0.elapsed().as_nanos();
            fill(&mut line, format_args!("flood-done {n} {took} "));
            let _ = out.write_all(&line);
            let _ = out.flush();
        }
        Some("paced") => {
            let rate: u64 = arg(&args, 1);
            let secs: f64 = arg(&args, 2);
            if rate == 0 || !secs.is_finite() || secs <= 0.0 {
                usage();
            }
            let total = (rate as f64 * secs) as u64;
            // Raw writes: one write(2) per line, nothing held in a buffer.
            let mut out = stdout.lock();
            let t0 = Instant::now();
            for i in 1..=total {
                let due = t0 + Duration::from_secs_f64((i - 1) as f64 / rate as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                fill(&mut line, format_args!("lat {i:010} {} ", now_ns()));
                if out.write_all(&line).and_then(|()| out.flush()).is_err() {
                    std::process::exit(1);
                }
            }
            fill(&mut line, format_args!("paced-done {total} "));
            let _ = out.write_all(&line);
            let _ = out.flush();
        }
        _ => usage(),
    }
    if !exit {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
