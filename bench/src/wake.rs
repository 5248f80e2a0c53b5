//! Wake-from-sleep latency of an eco web dyno of the sample app (`web: dyno-probe web`): the
//! app sleeps after a short idle time, then one request through the router wakes it; the time
//! from sending that request to its answer. Beside it, in the same run: the same request to the
//! awake dyno (the router's own cost), and starting a bare `dyno-probe web` until it accepts
//! (the floor any wake pays). With root, also for isolated (`--isolation linux`) dynos.
//!
//! Run: `cargo build --release --workspace && ./target/release/bench-wake [ROUNDS]`

use anyhow::{Result, bail};
use dyno_tests::{Platform, bin, free_port, is_root, wait_until};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn get(p: &Platform) -> Result<Duration> {
    let t0 = Instant::now();
    let (status, body) = p.route("sample", "/").map_err(anyhow::Error::msg)?;
    let took = t0.elapsed();
    if status != 200 {
        bail!("the sample app answered {status}: {body}");
    }
    Ok(took)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<34} n={:<3} min {:>7.1} ms  p50 {:>7.1} ms  p90 {:>7.1} ms  max {:>7.1} ms",
        v.len(),
        ms(v[0]),
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.9)),
        ms(*v.last().unwrap())
    );
}

fn series(isolation: &str, rounds: usize) -> Result<()> {
    // Asleep 1.2 s after the last request.
    // `--on-exit stop`: isolated dynos otherwise outlive the agent, for the next one to adopt.
    let p = Platform::start_custom(
        &["--isolation", isolation, "--on-exit", "stop"],
        &["--eco-idle-minutes", "0.02"],
    );
    p.deploy("sample", "web: dyno-probe web\n");
    p.dyno_ok(&["ps:scale", "web=1:eco", "-a", "sample", "--wait"]);
    let mut wake = Vec::new();
    let mut awake = Vec::new();
    for _ in 0..rounds {
        wait_until("the sample app asleep", Duration::from_secs(60), || {
            let d = p.dynos("sample");
            (d.len() == 1 && d[0]["state"] == "idle").then_some(())
        });
        wake.push(get(&p)?);
        for _ in 0..5 {
            awake.push(get(&p)?);
        }
    }
    report(&format!("wake and serve ({isolation})"), wake);
    report(&format!("served awake ({isolation})"), awake);
    Ok(())
}

/// A bare process started and accepting on its port: no platform.
fn bare(rounds: usize) -> Duration {
    let mut v = Vec::new();
    for _ in 0..rounds {
        let port = free_port();
        let t0 = Instant::now();
        let mut child = std::process::Command::new(bin("dyno-probe"))
            .arg("web")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn dyno-probe");
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_micros(200));
        }
        v.push(t0.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }
    v.sort();
    percentile(&v, 0.5)
}

fn main() -> Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        None => 10,
        Some(s) => match s.parse() {
            Ok(n) if n > 0 => n,
            _ => bail!("usage: bench-wake [ROUNDS]   (ROUNDS >= 1, default 10); got {s:?}"),
        },
    };
    println!(
        "bare dyno-probe start to accept    p50 {:.1} ms",
        bare(rounds).as_secs_f64() * 1000.0
    );
    series("none", rounds)?;
    if is_root() {
        series("linux", rounds)?;
    } else {
        println!("not root: skipping isolated (--isolation linux) dynos");
    }
    Ok(())
}
