//! Follows an isolated dyno's output file. A dyno writes its stdout and stderr to a file in its
//! directory rather than to a pipe held by the agent, so its writes never block on the agent and
//! it outlives an agent restart: the next agent resumes reading at the offset this one saved.
//!
//! The file is only ever appended to. What has been read is given back to the filesystem by
//! punching holes behind the read offset, so the disk holds little more than the unread tail.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use nix::fcntl::FallocateFlags;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

/// The read offset is saved at least this often while the tail keeps up with the writer...
pub const SAVE_INTERVAL: Duration = Duration::from_millis(100);
/// ...and whenever this much more was read since the last save.
pub const SAVE_BYTES: u64 = 256 * 1024;
/// Read bytes are released from the disk in steps of this size.
pub const PUNCH_BYTES: u64 = 1024 * 1024;
const BLOCK: u64 = 4096;
/// Most unread output a dyno's file may hold; past it the tail skips to the end (and says so
/// through [`TailControl::take_skipped`]), so a dyno that floods while the agent cannot send
/// does not fill the disk.
pub const MAX_UNREAD_BYTES: u64 = 256 * 1024 * 1024;

/// Tells a [`FileTail`] that nothing more will be written: it reads to the end, then ends.
#[derive(Debug, Clone, Default)]
pub struct TailControl {
    inner: Arc<ControlInner>,
}

#[derive(Debug, Default)]
struct ControlInner {
    finished: AtomicBool,
    waker: AtomicWaker,
    skipped: std::sync::atomic::AtomicU64,
}

impl TailControl {
    pub fn finish(&self) {
        self.inner.finished.store(true, Ordering::Release);
        self.inner.waker.wake();
    }

    fn finished(&self) -> bool {
        self.inner.finished.load(Ordering::Acquire)
    }

    /// Bytes of output skipped (never read) since the last call.
    pub fn take_skipped(&self) -> u64 {
        self.inner.skipped.swap(0, Ordering::Relaxed)
    }
}

/// The inotify instance watching one file, as something tokio can poll.
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// An `AsyncRead` of a growing file that waits (on inotify) at its end instead of ending there,
/// until its [`TailControl`] is finished.
pub struct FileTail {
    file: File,
    offset: u64,
    offset_file: PathBuf,
    saved: u64,
    saved_at: Instant,
    punched: u64,
    /// `None` only once dropped.
    watch: Option<AsyncFd<Watch>>,
    control: TailControl,
}

/// Where the tail of `output` keeps its read offset.
pub fn offset_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".offset");
    output.with_file_name(name)
}

/// The offset saved for `output`, or 0.
pub fn saved_offset(output: &Path) -> u64 {
    std::fs::read_to_string(offset_path(output))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl FileTail {
    /// Follows `path` from its saved offset (0 for a new file). Must be called inside a tokio
    /// runtime.
    pub fn open(path: &Path, control: TailControl) -> io::Result<FileTail> {
        // Read-write only so holes can be punched; nothing is written through this handle.
        let file = File::options().read(true).write(true).open(path)?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(path, AddWatchFlags::IN_MODIFY)?;
        let len = file.metadata()?.len();
        // An offset past the end can only come from a file that was replaced: start over.
        let offset = Some(saved_offset(path)).filter(|&o| o <= len).unwrap_or(0);
        Ok(FileTail {
            file,
            offset,
            offset_file: offset_path(path),
            saved: offset,
            saved_at: Instant::now(),
            punched: offset - offset % BLOCK,
            // SAFETY: `Watch` owns the inotify instance, whose descriptor stays open and
            // unchanged until the AsyncFd drops it.
            watch: Some(unsafe {
                AsyncFd::register_with_interest(Watch(inotify), Interest::READABLE)
            }?),
            control,
        })
    }

    /// How far the file has been read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Saves the offset when it moved enough or long enough ago (`force`: whenever it moved),
    /// and frees the disk blocks behind it.
    fn checkpoint(&mut self, force: bool) {
        if self.offset == self.saved {
            return;
        }
        let due = force
            || self.offset - self.saved >= SAVE_BYTES
            || self.saved_at.elapsed() >= SAVE_INTERVAL;
        if !due {
            return;
        }
        self.skip_if_too_far_behind();
        let tmp = self.offset_file.with_extension("offset.tmp");
        let written = std::fs::write(&tmp, self.offset.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.offset_file));
        if let Err(e) = written {
            tracing::warn!(error = %e, file = %self.offset_file.display(), "failed to save the output offset");
            return;
        }
        self.saved = self.offset;
        self.saved_at = Instant::now();
        let end = self.offset - self.offset % BLOCK;
        if end >= self.punched + PUNCH_BYTES {
            let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            // Filesystems without hole punching keep the bytes; the file then only grows.
            match nix::fcntl::fallocate(&self.file, flags, 0, end as libc::off_t) {
                Ok(()) => self.punched = end,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot punch holes in the output file");
                    self.punched = u64::MAX / 2;
                }
            }
        }
    }

    /// Jumps to the end when more than `MAX_UNREAD_BYTES` wait unread.
    fn skip_if_too_far_behind(&mut self) {
        let Ok(len) = self.file.metadata().map(|m| m.len()) else {
            return;
        };
        if len.saturating_sub(self.offset) > MAX_UNREAD_BYTES {
            let skipped = len - self.offset;
            self.control
                .inner
                .skipped
                .fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(
                skipped,
                "dyno output fell too far behind; skipping to its end"
            );
            self.offset = len;
        }
    }

    fn read_more(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
        let n = self.file.read_at(buf.initialize_unfilled(), self.offset)?;
        buf.advance(n);
        self.offset += n as u64;
        Ok(n)
    }
}

impl AsyncRead for FileTail {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Seen before the read: whatever was written before `finish` is then read below.
            let finished = this.control.finished();
            if this.read_more(buf)? > 0 {
                this.checkpoint(false);
                return Poll::Ready(Ok(()));
            }
            this.checkpoint(true);
            if finished {
                return Poll::Ready(Ok(()));
            }
            this.control.inner.waker.register(cx.waker());
            if this.control.finished() {
                continue;
            }
            let watch = this.watch.as_ref().expect("a live tail has its watch");
            let mut guard = match watch.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            // Readiness is cleared only when the queue is empty, so no write is missed.
            match guard.try_io(|w| w.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for FileTail {
    fn drop(&mut self) {
        self.checkpoint(true);
        // Closing an inotify instance waits out an RCU grace period (~10 ms here), which would
        // cap how fast an agent can stop dynos; a blocking-pool thread does the waiting.
        if let Some(watch) = self.watch.take() {
            let watch = watch.into_inner();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(watch))),
                Err(_) => drop(watch),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    fn append(path: &Path, text: &str) {
        let mut f = File::options()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn follows_a_growing_file_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output");
        append(&path, "one\n");
        let control = TailControl::default();
        let mut lines = BufReader::new(FileTail::open(&path, control.clone()).unwrap()).lines();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "one");

        // Waits at the end for the next write.
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                append(&path, "two\n");
            })
        };
        let two = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("the write wakes the tail");
        assert_eq!(two.unwrap().unwrap(), "two");
        writer.await.unwrap();

        append(&path, "three\n");
        control.finish();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "three");
        assert_eq!(lines.next_line().await.unwrap(), None, "ends once finished");
    }

    #[tokio::test]
    async fn the_next_tail_resumes_where_the_last_one_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output");
        append(&path, "a\nb\n");
        let control = TailControl::default();
        control.finish();
        let mut first = String::new();
        FileTail::open(&path, control)
            .unwrap()
            .read_to_string(&mut first)
            .await
            .unwrap();
        assert_eq!(first, "a\nb\n");
        assert_eq!(saved_offset(&path), 4);

        append(&path, "c\n");
        let control = TailControl::default();
        control.finish();
        let mut second = String::new();
        FileTail::open(&path, control)
            .unwrap()
            .read_to_string(&mut second)
            .await
            .unwrap();
        assert_eq!(second, "c\n", "only what the last tail did not read");
    }

    #[tokio::test]
    async fn read_bytes_are_released_from_the_disk() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output");
        let line = format!("{}\n", "x".repeat(1023));
        append(&path, &line.repeat(4 * 1024)); // 4 MiB
        let control = TailControl::default();
        control.finish();
        let mut tail = FileTail::open(&path, control).unwrap();
        let mut sink = Vec::new();
        tail.read_to_end(&mut sink).await.unwrap();
        assert_eq!(sink.len(), 4 * 1024 * 1024);
        drop(tail);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 4 * 1024 * 1024, "offsets stay valid");
        // ext4, xfs, btrfs and tmpfs punch holes; elsewhere the file keeps its blocks.
        let allocated = meta.blocks() * 512;
        if allocated >= meta.len() {
            eprintln!("NOTE: this filesystem does not punch holes; nothing was released");
        } else {
            assert!(allocated < 1024 * 1024, "allocated {allocated} bytes");
        }
    }
}
