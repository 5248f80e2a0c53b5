//! Turns a dyno's output stream into log messages: one per line, long lines split at
//! `MAX_LINE_BYTES` on character boundaries, invalid UTF-8 replaced.

use dyno_shared::logline::{MAX_LINE_BYTES, split_long};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Reads `reader` to its end, calling `emit` with every message. A missing final newline still
/// yields the last line.
pub async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    emit: impl FnMut(String),
) -> std::io::Result<()> {
    read_lines_paced(reader, emit, None).await
}

/// `read_lines`, waiting before each read until `room` has room for more lines: for output
/// that keeps while unread (a file), so a flood waits on disk instead of being shed.
pub async fn read_lines_paced<R: AsyncRead + Unpin>(
    reader: R,
    mut emit: impl FnMut(String),
    room: Option<&crate::outbox::Outbox>,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let mut line: Vec<u8> = Vec::new();
    loop {
        if let Some(outbox) = room
            && reader.buffer().is_empty()
        {
            // At least a read a second even while full: the tail then notices a backlog past
            // its bound and skips it rather than let the file grow without end.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                outbox.wait_for_log_room(),
            )
            .await;
        }
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            if !line.is_empty() {
                emit_piece(&line, &mut emit);
            }
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                reader.consume(i + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                emit_piece(&line, &mut emit);
                line.clear();
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                reader.consume(n);
                // No newline in sight: hand out full pieces so memory stays bounded.
                while line.len() > MAX_LINE_BYTES {
                    let cut = utf8_cut(&line, MAX_LINE_BYTES);
                    emit_piece(&line[..cut], &mut emit);
                    line.drain(..cut);
                }
            }
        }
    }
}

fn emit_piece(bytes: &[u8], emit: &mut impl FnMut(String)) {
    let text = String::from_utf8_lossy(bytes);
    // Replacement characters can make the text longer than the bytes were.
    for part in split_long(&text) {
        emit(part.to_string());
    }
}

/// The largest cut at or below `max` that does not split a UTF-8 sequence (`bytes.len() > max`).
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    let mut cut = max;
    // A sequence is at most 4 bytes, so at most 3 continuation bytes need skipping.
    while cut > 0 && max - cut < 3 && bytes[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    if cut == 0 || bytes[cut] & 0xC0 == 0x80 {
        max
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        read_lines(input, |l| out.push(l)).await.unwrap();
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_the_last_unterminated_one() {
        assert_eq!(
            lines_of(b"one\r\ntwo\n\nthree").await,
            vec!["one", "two", "", "three"]
        );
        assert!(lines_of(b"").await.is_empty());
    }

    #[tokio::test]
    async fn long_lines_are_split_at_the_limit_on_char_boundaries() {
        let long = "é".repeat(MAX_LINE_BYTES); // 2 bytes each
        let input = format!("{long}\nshort\n");
        let out = lines_of(input.as_bytes()).await;
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert_eq!(out[0].len() + out[1].len(), long.len());
        assert_eq!(format!("{}{}", out[0], out[1]), long);
        assert_eq!(out[2], "short");

        // Without any newline, pieces still come out whole.
        let endless = "€".repeat(MAX_LINE_BYTES); // 3 bytes each
        let out = lines_of(endless.as_bytes()).await;
        assert!(out.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert!(!out.concat().contains('\u{FFFD}'));
        assert_eq!(out.concat(), endless);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        assert_eq!(
            lines_of(b"ok \xff\xfe end\n").await,
            vec!["ok \u{FFFD}\u{FFFD} end"]
        );
    }
}
