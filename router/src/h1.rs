//! A small HTTP/1.1 client for requests without a body: the request head goes out in one write,
//! the response head is parsed with `httparse`, and the response body is read straight from the
//! dyno connection by hyper's server as it sends it on (Content-Length, chunked, or until close).
//!
//! hyper's client ran a second state machine in a task of its own per dyno connection and
//! passed every request and response through a channel and a oneshot; for a plain GET that was
//! about a quarter of the router's CPU. Requests with a body or an `Upgrade` still go through
//! hyper's client (see `connector`), which sends the body while the response comes in.

use crate::body::BoxError;
use crate::connector::Pool;
use crate::proxy::VIA;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode, Version};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most headers in a dyno's response head (hyper's client default).
const MAX_RESPONSE_HEADERS: usize = 100;
/// Headers first made room for.
const FEW_HEADERS: usize = 24;
/// Longest response head (hyper's client default buffer limit).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Longest chunk-size line or trailer line.
const MAX_CHUNK_LINE: usize = 4096;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// A request head, encoded once, that may be sent to any dyno.
#[derive(Debug)]
pub(crate) struct RawRequest {
    head: Vec<u8>,
    /// A HEAD request: the response has no body whatever its headers say.
    head_method: bool,
    /// The response's header lines are wanted as bytes ([`HeadLines`]) rather than as a header
    /// map: the router's own server writes them out as they are.
    pass_head: bool,
}

impl RawRequest {
    /// `head` is a complete HTTP/1.1 request head, for a request without a body.
    pub(crate) fn new(head: Vec<u8>, head_method: bool) -> Self {
        RawRequest {
            head,
            head_method,
            pass_head: false,
        }
    }

    /// The response comes back with its header lines in [`RawBody::take_head_lines`] and an
    /// empty header map.
    pub(crate) fn passing_head(mut self) -> Self {
        self.pass_head = true;
        self
    }
}

/// A dyno's response header lines as the router passes them on (`name: value\r\n` each, no
/// hop-by-hop headers, the router added to Via), but for Content-Length, which comes apart.
#[derive(Debug)]
pub(crate) struct HeadLines {
    pub(crate) lines: Vec<u8>,
    pub(crate) has_date: bool,
    /// The body length the dyno's Content-Length gave (not among the lines).
    pub(crate) content_length: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RawError {
    #[error("the dyno closed the connection before a complete response head")]
    Closed,
    #[error("the dyno's response head has more than {MAX_RESPONSE_HEADERS} headers")]
    TooManyHeaders,
    #[error("the dyno's response head is invalid: {0}")]
    Invalid(&'static str),
    #[error("the dyno's response body ended early")]
    Incomplete,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads more from `stream` into `buf`; `Ok(0)` at the end of the stream.
///
/// Through `AsyncRead` rather than `try_read_buf`: tokio then knows that a short read emptied
/// the socket, and the next read (or the pool's check of an idle connection) waits for epoll
/// instead of making a system call that fails with `EAGAIN`.
/// Room for `read_size` more is made when less than a quarter of it is left.
pub(crate) fn poll_fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    read_size: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < read_size / 4 {
        buf.reserve(read_size);
    }
    // tokio-util reads into the spare capacity without zeroing it first.
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf)
}

/// Whether an idle connection can carry a request: nothing arrived on it (no close, no stray
/// bytes). Usually no system call: tokio knows the socket has not been readable.
pub(crate) fn idle_usable(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
}

/// Sends `request` on `stream` and reads the response head; the body is read by the returned
/// [`RawBody`], which hands the connection back to `pool` once the response is complete.
/// `buf` is empty, perhaps with room left from the connection's last response.
pub(crate) async fn exchange(
    mut stream: TcpStream,
    mut buf: BytesMut,
    request: &RawRequest,
    pool: &Arc<Pool>,
    addr: SocketAddr,
) -> Result<Response<RawBody>, RawError> {
    stream.write_all(&request.head).await?;
    loop {
        let read =
            std::future::poll_fn(|cx| poll_fill(&mut stream, &mut buf, READ_SIZE, cx)).await?;
        if read == 0 {
            return Err(RawError::Closed);
        }
        loop {
            match parse_head(&mut buf, request.head_method, request.pass_head)? {
                Some(Parsed::Interim) => continue,
                Some(Parsed::Final(mut response, framing, keep_alive, lines)) => {
                    if body_to_come(framing, &buf) {
                        ack_now(&stream);
                    }
                    let mut body = RawBody::new(stream, buf, framing, keep_alive, pool, addr);
                    body.head_lines = lines;
                    *response.body_mut() = body;
                    return Ok(response);
                }
                None => {
                    // A head in pieces may wait on an ACK as a body does.
                    ack_now(&stream);
                    break;
                }
            }
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(RawError::Invalid("head too long"));
        }
    }
}

/// Whether the body is not all in `buf` yet, right after the head.
fn body_to_come(framing: Framing, buf: &[u8]) -> bool {
    match framing {
        Framing::Length(n) => (buf.len() as u64) < n,
        // A whole chunked body ends with the last chunk and no trailers.
        Framing::Chunked(_) => !buf.ends_with(b"0\r\n\r\n"),
        Framing::Close => true,
        Framing::Done => false,
    }
}

/// Acknowledges what came from the dyno at once rather than after the kernel's delayed-ACK
/// timer (up to 40 ms). A dyno that writes its head and its body in two writes, without
/// TCP_NODELAY, holds the body back until the head is acknowledged (Nagle): every such response
/// would wait out the timer. Only asked for when the body is still to come, so a response that
/// arrives whole costs no system call.
fn ack_now(stream: &TcpStream) {
    if let Err(err) = socket2::SockRef::from(stream).set_tcp_quickack(true) {
        tracing::debug!(error = %err, "TCP_QUICKACK failed");
    }
}

// Returned, then taken apart at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A 1xx other than 101, skipped (as hyper's client does).
    Interim,
    Final(Response<RawBody>, Framing, bool, Option<HeadLines>),
}

/// Parses one response head off the front of `buf`; `None` while it is incomplete. The head
/// comes back as the router passes it on: without hop-by-hop headers, with the router in Via.
fn parse_head(
    buf: &mut BytesMut,
    head_method: bool,
    pass_head: bool,
) -> Result<Option<Parsed>, RawError> {
    // Most heads are short: room for 100 headers is only made when they need it.
    match parse_head_in::<FEW_HEADERS>(buf, head_method, pass_head) {
        Err(RawError::TooManyHeaders) => {
            parse_head_in::<MAX_RESPONSE_HEADERS>(buf, head_method, pass_head)
        }
        parsed => parsed,
    }
}

fn parse_head_in<const N: usize>(
    buf: &mut BytesMut,
    head_method: bool,
    pass_head: bool,
) -> Result<Option<Parsed>, RawError> {
    let mut slots = [httparse::EMPTY_HEADER; N];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RawError::TooManyHeaders),
        Err(_) => return Err(RawError::Invalid("malformed")),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| RawError::Invalid("status code"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };

    // What frames the body and what goes.
    let mut close = false;
    let mut keep = false;
    let mut named: Vec<&[u8]> = Vec::new();
    let mut chunked: Option<bool> = None;
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let mut via: Option<Vec<u8>> = None;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
                if !token.is_empty() {
                    named.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last coding of the last header decides.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for part in h.value.split(|&b| b == b',') {
                match parse_length(part.trim_ascii()) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => bad_length = true,
                }
            }
        } else if name.eq_ignore_ascii_case(b"via")
            && h.value
                .iter()
                .all(|&b| (b' '..0x7f).contains(&b) || b == b'\t')
        {
            let prior = via.get_or_insert_with(Vec::new);
            prior.extend_from_slice(h.value);
            prior.extend_from_slice(b", ");
        }
    }
    // A message with both is suspect (RFC 9112 6.1): not reused.
    let mut keep_alive = !close
        && (version == Version::HTTP_11 || keep)
        && !(chunked.is_some() && (length.is_some() || bad_length));
    let framing = if head_method
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
    {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            keep_alive = false;
        }
        Framing::Done
    } else if let Some(chunked) = chunked {
        if chunked && version == Version::HTTP_11 {
            Framing::Chunked(Chunk::Size)
        } else {
            keep_alive = false;
            Framing::Close
        }
    } else if bad_length {
        return Err(RawError::Invalid("content-length"));
    } else {
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => {
                keep_alive = false;
                Framing::Close
            }
        }
    };

    // With Transfer-Encoding the body is framed anew for the client: a Content-Length beside
    // it would contradict that framing.
    let drop_length = chunked.is_some();
    let keep = |name: &[u8]| {
        !(hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"via")
            || (drop_length && name.eq_ignore_ascii_case(b"content-length"))
            || named.iter().any(|n| n.eq_ignore_ascii_case(name)))
    };

    if pass_head {
        let mut lines = Vec::with_capacity(len + 64);
        let mut has_date = false;
        for h in parsed.headers.iter() {
            let name = h.name.as_bytes();
            // The server writes one Content-Length of its own from `content_length`.
            if !keep(name) || name.eq_ignore_ascii_case(b"content-length") {
                continue;
            }
            has_date |= name.eq_ignore_ascii_case(b"date");
            lines.extend_from_slice(name);
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(h.value);
            lines.extend_from_slice(b"\r\n");
        }
        lines.extend_from_slice(b"via: ");
        if let Some(prior) = &via {
            lines.extend_from_slice(prior);
        }
        lines.extend_from_slice(VIA.as_bytes());
        lines.extend_from_slice(b"\r\n");
        let reason = parsed
            .reason
            .filter(|r| status.canonical_reason() != Some(*r))
            .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes().to_vec()).ok());
        let content_length = if drop_length { None } else { length };
        drop(named);
        buf.advance(len);
        let mut response = Response::new(RawBody::empty());
        *response.status_mut() = status;
        *response.version_mut() = version;
        if let Some(phrase) = reason {
            response.extensions_mut().insert(phrase);
        }
        let lines = HeadLines {
            lines,
            has_date,
            content_length,
        };
        return Ok(Some(Parsed::Final(
            response,
            framing,
            keep_alive,
            Some(lines),
        )));
    }

    // Header values are slices of the head, without copies.
    let base = buf.as_ptr() as usize;
    let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
    let reason = parsed.reason.map(|r| {
        let start = offset(r.as_bytes()) as usize;
        start..start + r.len()
    });
    let mut ranges = [(0u32, 0u32, 0u32, 0u32); N];
    let mut count = 0;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if !keep(name) {
            continue;
        }
        // The head is at most MAX_HEAD_BYTES plus one read long.
        let (name_at, value_at) = (offset(name), offset(h.value));
        ranges[count] = (
            name_at,
            name_at + name.len() as u32,
            value_at,
            value_at + h.value.len() as u32,
        );
        count += 1;
    }
    let via = match via {
        None => HeaderValue::from_static(VIA),
        Some(mut prior) => {
            prior.extend_from_slice(VIA.as_bytes());
            HeaderValue::from_bytes(&prior).unwrap_or(HeaderValue::from_static(VIA))
        }
    };
    drop(named);
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count + 1);
    for &(name_start, name_end, value_start, value_end) in &ranges[..count] {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
            .map_err(|_| RawError::Invalid("header name"))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))
                .map_err(|_| RawError::Invalid("header value"))?;
        headers.append(name, value);
    }
    headers.insert(header::VIA, via);

    let mut response = Response::new(RawBody::empty());
    *response.status_mut() = status;
    *response.version_mut() = version;
    if let Some(range) = reason {
        let text = &head[range.clone()];
        if status.canonical_reason().map(str::as_bytes) != Some(text)
            && let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(head.slice(range))
        {
            response.extensions_mut().insert(phrase);
        }
    }
    *response.headers_mut() = headers;
    Ok(Some(Parsed::Final(response, framing, keep_alive, None)))
}

/// Headers about one connection (RFC 9110 7.6.1), any case.
pub(crate) fn hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 9] = [
        b"connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"keep-alive",
        b"proxy-connection",
    ];
    NAMES
        .iter()
        .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
}

pub(crate) fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // 19 digits always fit in a u64.
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the dyno closes.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
}

/// A dyno's response body, read from its connection.
#[derive(Debug)]
pub(crate) struct RawBody {
    /// `None` once the response is complete (the connection is back in the pool or closed).
    conn: Option<Conn>,
    /// Bytes read and not yet passed on.
    buf: BytesMut,
    framing: Framing,
    /// Why the body broke off, returned on the poll after the one that found out.
    failed: Option<RawError>,
    /// The head's header lines, when the request was [`RawRequest::passing_head`].
    head_lines: Option<HeadLines>,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    keep_alive: bool,
    pool: Arc<Pool>,
    addr: SocketAddr,
}

impl RawBody {
    fn empty() -> Self {
        RawBody {
            conn: None,
            buf: BytesMut::new(),
            framing: Framing::Done,
            failed: None,
            head_lines: None,
        }
    }

    pub(crate) fn take_head_lines(&mut self) -> Option<HeadLines> {
        self.head_lines.take()
    }

    fn new(
        stream: TcpStream,
        buf: BytesMut,
        framing: Framing,
        keep_alive: bool,
        pool: &Arc<Pool>,
        addr: SocketAddr,
    ) -> Self {
        let mut body = RawBody {
            conn: Some(Conn {
                stream,
                keep_alive,
                pool: Arc::clone(pool),
                addr,
            }),
            buf,
            framing,
            failed: None,
            head_lines: None,
        };
        if framing == Framing::Done {
            body.finished();
        }
        body
    }

    /// The response is complete: the connection goes back to the pool when nothing more came
    /// on it and it may carry another request.
    fn finished(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && conn.keep_alive
            && self.buf.is_empty()
        {
            conn.pool
                .put_raw(conn.addr, conn.stream, std::mem::take(&mut self.buf));
        }
    }

    /// Reads more; an error at the end of the stream unless the body runs until close.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, RawError>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(Err(RawError::Incomplete));
        };
        match ready!(poll_fill(&mut conn.stream, &mut self.buf, READ_SIZE, cx)) {
            Ok(0) if self.framing == Framing::Close => Poll::Ready(Ok(0)),
            Ok(0) => Poll::Ready(Err(RawError::Incomplete)),
            Ok(n) => Poll::Ready(Ok(n)),
            Err(err) => Poll::Ready(Err(err.into())),
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RawError>>> {
        loop {
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) => {
                    if self.buf.is_empty() {
                        ready!(self.poll_more(cx))?;
                        continue;
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    let data = self.buf.split_to(take).freeze();
                    let left = left - take as u64;
                    if left == 0 {
                        self.finished();
                    } else {
                        self.framing = Framing::Length(left);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Framing::Close => {
                    if self.buf.is_empty() && ready!(self.poll_more(cx))? == 0 {
                        self.conn = None;
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(self.buf.split().freeze())));
                }
                Framing::Chunked(chunk) => match self.chunked(chunk)? {
                    Some(data) => return Poll::Ready(Some(Ok(data))),
                    // The last chunk and its trailers: done.
                    None if self.framing == Framing::Done => return Poll::Ready(None),
                    None => {
                        ready!(self.poll_more(cx))?;
                    }
                },
            }
        }
    }

    /// Decodes what is buffered: chunk data when there is some, `None` when more must be read
    /// (or the body is done).
    fn chunked(&mut self, mut chunk: Chunk) -> Result<Option<Bytes>, RawError> {
        loop {
            self.framing = Framing::Chunked(chunk);
            match chunk {
                Chunk::Size => {
                    let Some(line) = self.line()? else {
                        return Ok(None);
                    };
                    let size = chunk_size(&line)?;
                    chunk = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    let data = self.buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Some(data));
                }
                Chunk::DataEnd => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(RawError::Invalid("chunk data not followed by CRLF"));
                    }
                    self.buf.advance(2);
                    chunk = Chunk::Size;
                }
                Chunk::Trailers => {
                    // Trailers are dropped, as most proxies do.
                    let Some(line) = self.line()? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.finished();
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// A CRLF-terminated line off the front of the buffer, without its CRLF.
    fn line(&mut self) -> Result<Option<Bytes>, RawError> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                let line = self.buf.split_to(end).freeze();
                self.buf.advance(2);
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_CHUNK_LINE => {
                Err(RawError::Invalid("chunk line too long"))
            }
            None => Ok(None),
        }
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, RawError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(RawError::Invalid("chunk size"));
    }
    let mut size = 0u64;
    for &b in digits {
        let digit = (b as char)
            .to_digit(16)
            .ok_or(RawError::Invalid("chunk size"))?;
        size = size * 16 + u64::from(digit);
    }
    Ok(size)
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(err) = this.failed.take() {
            return Poll::Ready(Some(Err(Box::new(err))));
        }
        match ready!(this.poll_data(cx)) {
            Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some(Err(err)) => {
                // Never back to the pool.
                this.conn = None;
                this.framing = Framing::Done;
                // The error comes on the next poll: hyper drops what it has not written yet
                // when a body fails, and the client should get the head and the bytes the dyno
                // did send (as from hyper's client, whose errors came a task later).
                this.failed = Some(err);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(framing: Framing, bytes: &[u8]) -> RawBody {
        RawBody {
            conn: None,
            buf: BytesMut::from(bytes),
            framing,
            failed: None,
            head_lines: None,
        }
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let mut body = body_of(
            Framing::Chunked(Chunk::Size),
            b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n",
        );
        let mut out = Vec::new();
        while let Framing::Chunked(chunk) = body.framing {
            match body.chunked(chunk).unwrap() {
                Some(data) => out.extend_from_slice(&data),
                None => break,
            }
        }
        assert_eq!(out, b"hello0123456789");
        assert_eq!(body.framing, Framing::Done);
        assert!(body.buf.is_empty());

        let mut bad = body_of(Framing::Chunked(Chunk::Size), b"zz\r\n");
        assert!(bad.chunked(Chunk::Size).is_err());
        assert_eq!(chunk_size(b"ff ").unwrap(), 255);
    }

    #[test]
    fn response_heads_are_parsed_and_framed() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\n\
               HTTP/1.1 200 Fine\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc"[..],
        );
        assert!(matches!(
            parse_head(&mut buf, false, false),
            Ok(Some(Parsed::Interim))
        ));
        let Ok(Some(Parsed::Final(response, framing, keep_alive, None))) =
            parse_head(&mut buf, false, false)
        else {
            panic!("no head");
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-a"], "b");
        assert!(
            response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .is_some()
        );
        assert_eq!(framing, Framing::Length(3));
        assert!(keep_alive);
        assert_eq!(&buf[..], b"abc");

        let mut hop = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\n\
               Via: 1.0 a\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n"[..],
        );
        let Ok(Some(Parsed::Final(response, framing, keep_alive, None))) =
            parse_head(&mut hop, false, false)
        else {
            panic!("no head");
        };
        assert_eq!(framing, Framing::Chunked(Chunk::Size));
        assert!(keep_alive);
        let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept", "via"]);
        assert_eq!(response.headers()["via"], "1.0 a, 1.1 dyno-router");
        assert!(
            response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .is_none()
        );

        let mut close = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
        let Ok(Some(Parsed::Final(_, framing, keep_alive, None))) =
            parse_head(&mut close, false, false)
        else {
            panic!("no head");
        };
        assert_eq!(framing, Framing::Close);
        assert!(!keep_alive);

        let mut head = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"[..]);
        let Ok(Some(Parsed::Final(_, framing, _, None))) = parse_head(&mut head, true, false)
        else {
            panic!("no head");
        };
        assert_eq!(framing, Framing::Done);

        let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"[..]);
        assert!(parse_head(&mut bad, false, false).is_err());
        let head_with = |count: usize| {
            let mut head = BytesMut::from(&b"HTTP/1.1 204 No Content\r\n"[..]);
            for i in 0..count {
                head.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            head
        };
        let Ok(Some(Parsed::Final(response, Framing::Done, true, None))) =
            parse_head(&mut head_with(60), false, false)
        else {
            panic!("no head");
        };
        assert_eq!(response.headers().len(), 61);
        assert!(matches!(
            parse_head(&mut head_with(120), false, false),
            Err(RawError::TooManyHeaders)
        ));
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-"[..]);
        assert!(matches!(parse_head(&mut partial, false, false), Ok(None)));
    }

    #[test]
    fn passed_heads_come_back_as_the_lines_the_client_gets() {
        let mut hop = BytesMut::from(
            &b"HTTP/1.1 299 Fine Indeed\r\nConnection: X-Hop\r\nX-Hop: 1\r\nVia: 1.0 a\r\n\
               Content-Length: 5\r\nTransfer-Encoding: chunked\r\nDate: today\r\nX-Kept: 2\r\n\r\n"
                [..],
        );
        let Ok(Some(Parsed::Final(response, framing, _, Some(head)))) =
            parse_head(&mut hop, false, true)
        else {
            panic!("no head lines");
        };
        assert!(hop.is_empty());
        assert_eq!(framing, Framing::Chunked(Chunk::Size));
        assert!(response.headers().is_empty());
        assert_eq!(response.status().as_u16(), 299);
        let reason = response.extensions().get::<hyper::ext::ReasonPhrase>();
        assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Fine Indeed"[..]));
        // The body is chunked anew for the client: its Content-Length goes with the hop headers.
        assert_eq!(
            String::from_utf8(head.lines).unwrap(),
            "Date: today\r\nX-Kept: 2\r\nvia: 1.0 a, 1.1 dyno-router\r\n"
        );
        assert!(head.has_date);
        assert_eq!(head.content_length, None);

        let mut plain = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"[..]);
        let Ok(Some(Parsed::Final(response, framing, true, Some(head)))) =
            parse_head(&mut plain, false, true)
        else {
            panic!("no head lines");
        };
        assert!(
            response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .is_none()
        );
        assert_eq!(framing, Framing::Length(3));
        assert_eq!(&plain[..], b"abc");
        assert_eq!(head.lines, b"via: 1.1 dyno-router\r\n".to_vec());
        assert!(!head.has_date);
        assert_eq!(head.content_length, Some(3));
    }
}
