//! The rendezvous service `heroku run` attaches to: `POST /apps/{app}/dynos` with
//! `attach: true` answers `attach_url: rendezvous://HOST:PORT/SECRET`; the client opens TLS to
//! it, writes `SECRET\r\n`, drops the first chunk it gets back, and prints the rest until the
//! connection closes. Each secret is good for one connection, within the coordinator's
//! `attach_within` (`ATTACH_WITHIN` by default).

use dyno_shared::api::RunEvent;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls;

/// By default, a one-off nobody attached to within this is stopped (Heroku's R13).
pub const ATTACH_WITHIN: Duration = Duration::from_secs(60);
/// The line the heroku CLI takes a one-off's exit code from.
const EXIT_STATUS: &str = "\u{FFFF} heroku-command-exit-status:";
/// Longest first line (the secret, maybe with a query) a client may send.
const MAX_LINE: usize = 1024;

/// A started one-off waiting for its client. Dropping `guard` stops the dyno.
pub struct Pending {
    pub guard: Box<dyn Send>,
    pub events: mpsc::Receiver<RunEvent>,
}

#[derive(Default)]
pub struct Sessions {
    pending: Mutex<HashMap<String, Pending>>,
    port: std::sync::atomic::AtomicU16,
}

impl Sessions {
    pub fn insert(&self, secret: String, p: Pending) {
        self.pending
            .lock()
            .expect("rendezvous lock")
            .insert(secret, p);
    }

    pub fn take(&self, secret: &str) -> Option<Pending> {
        self.pending.lock().expect("rendezvous lock").remove(secret)
    }

    /// The listener's port, 0 until it listens.
    pub fn port(&self) -> u16 {
        self.port.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Accepts attach connections until `stop`.
pub async fn serve(
    sessions: std::sync::Arc<Sessions>,
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    if let Ok(a) = listener.local_addr() {
        sessions
            .port
            .store(a.port(), std::sync::atomic::Ordering::Relaxed);
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "rendezvous accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            match handshake.await {
                Ok(Ok(stream)) => {
                    if let Err(e) = attach(&sessions, stream).await {
                        tracing::debug!(%peer, error = %e, "rendezvous connection ended");
                    }
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "rendezvous handshake failed"),
                Err(_) => tracing::debug!(%peer, "rendezvous handshake timed out"),
            }
        });
    }
}

/// The secret a client's first line names: the line without `\r\n` and any `?query`.
pub fn secret_of(line: &str) -> &str {
    let line = line.trim_end_matches(['\r', '\n']);
    line.split('?').next().unwrap_or_default()
}

async fn attach<S>(sessions: &Sessions, stream: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    let mut limited = (&mut rd).take(MAX_LINE as u64);
    tokio::time::timeout(
        Duration::from_secs(10),
        limited.read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no secret sent"))??;
    let secret = secret_of(&String::from_utf8_lossy(&line)).to_string();
    // The client discards its first chunk: the greeting goes alone, in its own TLS record.
    wr.write_all(b"rendezvous\r\n").await?;
    wr.flush().await?;
    let Some(mut p) = sessions.take(&secret) else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        wr.write_all(b"! unknown or expired run session\n").await?;
        wr.flush().await?;
        return wr.shutdown().await;
    };
    // Keep the first output out of the greeting's chunk even if both are ready at once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut input = [0u8; 512];
    let mut status_sent = false;
    loop {
        tokio::select! {
            ev = p.events.recv() => match ev {
                Some(RunEvent::Line { line }) => {
                    status_sent |= line.message.contains(EXIT_STATUS);
                    let mut out = line.message.into_bytes();
                    out.push(b'\n');
                    wr.write_all(&out).await?;
                    wr.flush().await?;
                }
                Some(RunEvent::Error { message }) => {
                    wr.write_all(format!("! {message}\n").as_bytes()).await?;
                    break;
                }
                // The exit code comes back to the caller: the CLI exits with it. `heroku run
                // -x` echoes it itself, unless the command exited before its echo ran.
                Some(RunEvent::Exit { code }) => {
                    if !status_sent {
                        wr.write_all(format!("{EXIT_STATUS} {code}\n").as_bytes()).await?;
                    }
                    break;
                }
                None => break,
                Some(RunEvent::Started { .. }) => {}
            },
            n = rd.read(&mut input) => match n {
                // The client closed or went away (the heroku CLI never half-closes: at the end
                // of a piped stdin it sends ^D as data): the one-off stops, as on Heroku.
                Ok(0) | Err(_) => break,
                // Ctrl-C from a terminal in raw mode: the same.
                Ok(n) if input[..n].contains(&0x03) => break,
                // Anything else is stdin, which dynos here do not have.
                Ok(_) => {}
            },
        }
    }
    wr.flush().await?;
    drop(p.guard);
    wr.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::{LogLine, LogSource};

    /// Drops flag a stop, as `RunGuard` stops the dyno.
    struct Stopped(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stopped {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn line(message: &str) -> RunEvent {
        RunEvent::Line {
            line: LogLine {
                at: 0,
                app: "shop".into(),
                source: LogSource::App,
                process: "run.1234".into(),
                message: message.into(),
            },
        }
    }

    /// A session `secret` whose events the test sends; the flag says whether it was stopped.
    fn session(
        sessions: &Sessions,
        secret: &str,
    ) -> (
        mpsc::Sender<RunEvent>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        sessions.insert(
            secret.into(),
            Pending {
                guard: Box::new(Stopped(stopped.clone())),
                events: rx,
            },
        );
        (tx, stopped)
    }

    async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn output_then_the_exit_status_the_cli_reads_and_the_secret_is_single_use() {
        let sessions = Sessions::default();
        let (tx, stopped) = session(&sessions, "s3cret");
        tx.send(line("hello")).await.unwrap();
        tx.send(RunEvent::Exit { code: 3 }).await.unwrap();
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(b"s3cret?x=1\r\n").await.unwrap();
        attach(&sessions, server).await.unwrap();
        let out = read_all(&mut client).await;
        assert_eq!(
            out,
            "rendezvous\r\nhello\n\u{FFFF} heroku-command-exit-status: 3\n"
        );
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
        // Used once: a second connection with it is told so, after the greeting.
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(b"s3cret\r\n").await.unwrap();
        attach(&sessions, server).await.unwrap();
        assert_eq!(
            read_all(&mut client).await,
            "rendezvous\r\n! unknown or expired run session\n"
        );
    }

    #[tokio::test]
    async fn heroku_run_x_echoes_its_own_status_and_gets_no_second_one() {
        let sessions = Sessions::default();
        let (tx, _) = session(&sessions, "x");
        tx.send(line("\u{FFFF} heroku-command-exit-status: 0"))
            .await
            .unwrap();
        tx.send(RunEvent::Exit { code: 0 }).await.unwrap();
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(b"x\r\n").await.unwrap();
        attach(&sessions, server).await.unwrap();
        let out = read_all(&mut client).await;
        assert_eq!(
            out.matches("heroku-command-exit-status").count(),
            1,
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_client_that_closes_or_sends_ctrl_c_stops_the_dyno() {
        for (bytes, close) in [(&b""[..], true), (&b"\x03"[..], false)] {
            let sessions = Sessions::default();
            let (_tx, stopped) = session(&sessions, "k");
            let (mut client, server) = tokio::io::duplex(4096);
            client.write_all(b"k\r\n").await.unwrap();
            client.write_all(bytes).await.unwrap();
            if close {
                client.shutdown().await.unwrap();
            }
            // Ends although the dyno never exits: the client ended it.
            tokio::time::timeout(Duration::from_secs(5), attach(&sessions, server))
                .await
                .expect("attach ends when the client goes")
                .unwrap();
            assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
        }
    }

    #[test]
    fn the_secret_is_the_first_line_without_its_query() {
        assert_eq!(secret_of("abc123\r\n"), "abc123");
        assert_eq!(secret_of("abc123?foo=bar\r\n"), "abc123");
        assert_eq!(secret_of("abc123"), "abc123");
        assert_eq!(secret_of("\r\n"), "");
    }
}
