//! The router's own HTTP/1.1 server for plain requests (HTTP/1.1, origin-form, no body, no
//! `Upgrade` or `Expect`, a known app): the head is parsed with `httparse` on the stack, sent to
//! the dyno by [`crate::h1`], and the answer written back with its body in one write.
//!
//! Everything else is hyper's: the first request that is not plain hands the connection, with
//! the bytes read so far, to hyper's server for the rest of its life (HTTP/2 prior knowledge,
//! bodies, upgrades, HTTP/1.0, and every head the router refuses: hyper's path answers those).
//! hyper's server ran a state machine per connection that, with its header map, request and
//! service future, cost about a quarter of the router's CPU per request.

use crate::proxy::{ClientConn, PlainRequest, push_decimal};
use crate::{Server, serve_http, stopped};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Body;
use hyper::header;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::body::ResponseBody;

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;
/// A head still incomplete at this size goes to hyper, which has the limits and the answers.
const MAX_PLAIN_HEAD: usize = 16 * 1024;
/// Headers first made room for; then 100 (hyper's default), then HEROKU.md's 1000 (on the
/// heap: only heads that need it pay for it).
const FEW_HEADERS: usize = 24;
const SOME_HEADERS: usize = 100;
const MAX_HEADERS: usize = crate::proxy::MAX_HEADERS;
/// Response bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;

/// Serves one client connection until it closes, the router stops, or a request needs hyper.
pub(crate) async fn serve<I>(
    server: Arc<Server>,
    mut io: I,
    conn: ClientConn,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let peer_ip = crate::proxy::ip_string(conn.peer.ip());
    // One wait for the router to stop, for the connection's life: made afresh between
    // requests it cost a registration with the watch each time.
    let mut watch = stop.clone();
    let mut stopping = std::pin::pin!(async move { stopped(&mut watch).await });
    // The idle limit between requests: one timer for the connection, moved on only when it
    // fires early, rather than one armed and disarmed per request.
    // A client has this long to send its next request head, from the end of the last
    // response, and to finish one it started.
    let idle_limit = server.proxy.config().client_idle_timeout;
    let mut idle_since = tokio::time::Instant::now();
    let mut idle_timer = std::pin::pin!(tokio::time::sleep_until(idle_since + idle_limit));
    loop {
        // A complete plain head, or hyper's turn.
        let mut head_deadline = None;
        let (prepared, head_method, close) = loop {
            match parse(&server, conn, &peer_ip, &buf) {
                Parsed::Plain {
                    prepared,
                    len,
                    head_method,
                    close,
                } => {
                    buf.advance(len);
                    break (prepared, head_method, close);
                }
                Parsed::Partial if buf.len() <= MAX_PLAIN_HEAD => {}
                parsed @ (Parsed::Partial | Parsed::Other { .. }) => {
                    // A head too big to count here, or with more headers than hyper takes by
                    // default: hyper with room for 1000 (and its 431 past that).
                    let many_headers = match parsed {
                        Parsed::Other { many_headers } => many_headers,
                        _ => true,
                    };
                    if *stop.borrow() {
                        // hyper would only be told to stop before it read the request.
                        return;
                    }
                    let io = TokioIo::new(Prefixed {
                        prefix: buf.freeze(),
                        io,
                    });
                    // Boxed: hyper's state would make every connection's task several
                    // times larger, and the plain path's state more spread out.
                    return Box::pin(serve_http(server, io, conn, many_headers, stop)).await;
                }
            }
            let read = if buf.is_empty() {
                // Idle between requests: the router stopping or the idle limit closes the
                // connection.
                tokio::select! {
                    biased;
                    read = fill(&mut io, &mut buf) => read,
                    () = &mut stopping => return,
                    () = &mut idle_timer => {
                        let limit = idle_since + idle_limit;
                        if tokio::time::Instant::now() >= limit {
                            return;
                        }
                        idle_timer.as_mut().reset(limit);
                        continue;
                    }
                }
            } else {
                let deadline =
                    *head_deadline.get_or_insert_with(|| tokio::time::Instant::now() + idle_limit);
                tokio::select! {
                    biased;
                    read = fill(&mut io, &mut buf) => read,
                    () = &mut stopping => return,
                    () = tokio::time::sleep_until(deadline) => return,
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };

        // The idle timer times the request too (H12): it is due at or before each deadline
        // and moved on when it fires early.
        let response = {
            let mut forward =
                std::pin::pin!(server.proxy.forward_plain(prepared, idle_timer.as_mut()));
            // While nothing more came from the client, it is watched as the dyno works: hanging
            // up drops the request (H27). Once the next request is in (pipelined), it is left
            // alone until its turn, as hyper does; a client that half-closes after it still
            // gets both.
            loop {
                if !buf.is_empty() {
                    break forward.as_mut().await;
                }
                tokio::select! {
                    biased;
                    response = forward.as_mut() => break response,
                    read = fill(&mut io, &mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                }
            }
        };
        let close = close || *stop.borrow();
        match write_response(&mut io, &mut buf, response, head_method, close).await {
            Ok(true) => {
                idle_since = tokio::time::Instant::now();
                // A request timeout longer than the idle limit left the timer past it.
                if idle_timer.deadline() > idle_since + idle_limit {
                    idle_timer.as_mut().reset(idle_since + idle_limit);
                }
            }
            Ok(false) => {
                let _ = io.shutdown().await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// What the front of the buffer holds.
enum Parsed {
    Plain {
        prepared: crate::proxy::PlainPrepared,
        /// Bytes of the head.
        len: usize,
        head_method: bool,
        /// The client asked to close after this response.
        close: bool,
    },
    Partial,
    /// A request for hyper, or not HTTP/1.1 at all; `many_headers`: more than hyper's default
    /// of 100.
    Other {
        many_headers: bool,
    },
}

fn parse(server: &Server, conn: ClientConn, peer_ip: &str, buf: &[u8]) -> Parsed {
    // HTTP/2 with prior knowledge.
    if buf.starts_with(b"PRI ") {
        return Parsed::Other {
            many_headers: false,
        };
    }
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    if let Some(parsed) = parse_in(server, conn, peer_ip, buf, &mut few) {
        return parsed;
    }
    let mut some = [httparse::EMPTY_HEADER; SOME_HEADERS];
    if let Some(parsed) = parse_in(server, conn, peer_ip, buf, &mut some) {
        return parsed;
    }
    let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    match parse_in(server, conn, peer_ip, buf, &mut slots) {
        None => Parsed::Other { many_headers: true },
        Some(parsed) => parsed,
    }
}

/// `None` when the head has more headers than `slots`.
fn parse_in<'b>(
    server: &Server,
    conn: ClientConn,
    peer_ip: &str,
    buf: &'b [u8],
    slots: &mut [httparse::Header<'b>],
) -> Option<Parsed> {
    // Only a head with more than 100 headers is parsed with more slots.
    let many_headers = slots.len() > SOME_HEADERS;
    let mut req = httparse::Request::new(slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Some(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return None,
        Err(_) => return Some(Parsed::Other { many_headers }),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Some(Parsed::Other { many_headers });
    };
    // CONNECT is refused (405) on hyper's path.
    if !plain_target(target) || method == "CONNECT" {
        return Some(Parsed::Other { many_headers });
    }
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if h.value.trim_ascii() != b"0" {
                return Some(Parsed::Other { many_headers });
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Some(Parsed::Other { many_headers });
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let plain = PlainRequest {
        method,
        target,
        headers: req.headers,
        peer_ip,
    };
    let parsed = match server.proxy.prepare_plain(conn, &plain) {
        Some(prepared) => Parsed::Plain {
            prepared,
            len,
            head_method: method == "HEAD",
            close,
        },
        None => Parsed::Other { many_headers },
    };
    Some(parsed)
}

/// An origin-form target of characters any URI parser takes; anything else is for hyper's
/// stricter one to judge.
fn plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

/// Reads more from `io` into `buf`; `Ok(0)` at the end of the stream.
async fn fill<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) -> io::Result<usize> {
    std::future::poll_fn(|cx| crate::h1::poll_fill(&mut *io, buf, READ_SIZE, cx)).await
}

/// Writes `response` to the client: its head, then its body (framed by its Content-Length,
/// by its known size, or chunked), gathered into as few writes as the body allows. `Ok(false)`
/// when the connection must close after it.
/// While the body waits for the dyno and nothing else came from the client, `io` is watched:
/// a client that hangs up ends the response (its log line says H27). What it sends is kept in
/// `buf`.
async fn write_response<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    response: Response<ResponseBody>,
    head_method: bool,
    close: bool,
) -> io::Result<bool> {
    let mut out = OutBuf::take();
    let out = &mut out.0;
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    // A 101 nobody asked for (plain requests carry no Upgrade): nothing can follow it.
    let close = close || status == StatusCode::SWITCHING_PROTOCOLS;
    let no_body = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodiless = head_method || no_body || status == StatusCode::NOT_MODIFIED;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    // Some(length) when a Content-Length header frames the body (None inside: unreadable).
    let mut declared: Option<Option<u64>> = None;
    let mut has_date = false;
    match body.take_head_lines() {
        // A dyno's head, as bytes already.
        Some(head) => {
            out.extend_from_slice(&head.lines);
            has_date = head.has_date;
            // One Content-Length however the dyno wrote it, and none where there is no body
            // to measure (as hyper).
            if let Some(len) = head.content_length
                && !no_body
                && (head_method || status != StatusCode::NOT_MODIFIED)
            {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, len);
                out.extend_from_slice(b"\r\n");
                declared = Some(Some(len));
            }
        }
        None => {
            for (name, value) in &parts.headers {
                if name == header::CONTENT_LENGTH {
                    declared = Some(crate::h1::parse_length(value.as_bytes().trim_ascii()));
                } else if name == header::DATE {
                    has_date = true;
                }
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    let mut chunked = false;
    if !bodiless && declared.is_none() {
        match body.size_hint().exact() {
            Some(len) => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, len);
                out.extend_from_slice(b"\r\n");
                declared = Some(Some(len));
            }
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                chunked = true;
            }
        }
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if bodiless {
        // The body is empty (or not for this method): nothing of it goes out.
        drop(body);
        io.write_all(out).await?;
        io.flush().await?;
        return Ok(!close);
    }

    let mut sent = 0u64;
    let mut complete = true;
    loop {
        // What the body has now; only when it has nothing is what is gathered written first.
        let now = std::future::poll_fn(|cx| Poll::Ready(poll_frame(&mut body, cx))).await;
        let next = match now {
            Poll::Ready(next) => next,
            Poll::Pending => {
                io.write_all(out).await?;
                io.flush().await?;
                out.clear();
                if buf.is_empty() {
                    tokio::select! {
                        biased;
                        next = std::future::poll_fn(|cx| poll_frame(&mut body, cx)) => next,
                        read = fill(io, buf) => match read {
                            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                            Err(err) => return Err(err),
                            Ok(_) => continue,
                        },
                    }
                } else {
                    std::future::poll_fn(|cx| poll_frame(&mut body, cx)).await
                }
            }
        };
        let data = match next {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: the client did not ask for them (no `TE: trailers` on this path).
                Err(_) => continue,
            },
            Some(Err(_)) => {
                complete = false;
                break;
            }
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if chunked {
            push_hex(out, data.len());
            out.extend_from_slice(b"\r\n");
        }
        if data.len() >= WRITE_BATCH / 4 {
            // Big chunks go out as they are rather than through the buffer.
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_BATCH {
            io.write_all(out).await?;
            out.clear();
        }
    }
    if chunked && complete {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    io.write_all(out).await?;
    io.flush().await?;
    out.clear();
    // A body that broke off, or came out another length than its head said, leaves the
    // client nothing to frame the next response by.
    let framed = complete && (chunked || declared == Some(Some(sent)));
    Ok(framed && !close)
}

fn poll_frame(
    body: &mut ResponseBody,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<hyper::body::Frame<Bytes>, crate::body::BoxError>>> {
    Pin::new(body).poll_frame(cx)
}

fn push_hex(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[rest % 16];
        rest /= 16;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The buffer a response is gathered in, taken from its thread and handed back after: every
/// connection of a worker writes through the same memory, still in the CPU's cache, rather
/// than through a buffer of its own that went cold while the connection waited.
struct OutBuf(Vec<u8>);

/// A buffer grown past this by a big response is not kept.
const KEPT_OUT: usize = 2 * WRITE_BATCH;

impl OutBuf {
    fn take() -> Self {
        let spare = SPARE_OUT.with(|spare| std::mem::take(&mut *spare.borrow_mut()));
        if spare.capacity() == 0 {
            return OutBuf(Vec::with_capacity(4096));
        }
        OutBuf(spare)
    }
}

impl Drop for OutBuf {
    fn drop(&mut self) {
        if self.0.capacity() > KEPT_OUT {
            return;
        }
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        SPARE_OUT.with(|spare| {
            // Another response on this thread may have taken one meanwhile: one is kept.
            if let Ok(mut spare) = spare.try_borrow_mut()
                && spare.capacity() == 0
            {
                *spare = buf;
            }
        });
    }
}

thread_local! {
    static SPARE_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The current second's Date value, made once a second per worker thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, now.
fn push_date(out: &mut Vec<u8>) {
    let secs = (crate::clock::unix_ms() / 1000) as u64;
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

/// A connection handed to hyper with the bytes already read from it in front.
struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn targets_that_stay_on_the_plain_path() {
        for ok in ["/", "/a/b?c=d&e=%20", "/x;y,z:@!$'()*+~._-"] {
            assert!(plain_target(ok), "{ok}");
        }
        for other in ["*", "http://a/", "/a b", "/{x}", "/a|b", "/\"", "/é", ""] {
            assert!(!plain_target(other), "{other}");
        }
    }

    #[test]
    fn numbers_and_dates_are_written_as_http_writes_them() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, u64::MAX);
        out.push(b' ');
        push_hex(&mut out, 0);
        out.push(b' ');
        push_hex(&mut out, 0x1a2b);
        assert_eq!(out, b"0 18446744073709551615 0 1a2b");
        let mut date = Vec::new();
        push_date(&mut date);
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&date).unwrap()).unwrap();
        let skew = SystemTime::now().duration_since(parsed).unwrap();
        assert!(skew < std::time::Duration::from_secs(2), "{skew:?}");
    }

    #[tokio::test]
    async fn a_prefixed_stream_reads_its_prefix_first() {
        use tokio::io::AsyncReadExt;
        let (mut near, far) = tokio::io::duplex(64);
        near.write_all(b" world").await.unwrap();
        drop(near);
        let mut prefixed = Prefixed {
            prefix: Bytes::from_static(b"hello"),
            io: far,
        };
        let mut all = String::new();
        prefixed.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
