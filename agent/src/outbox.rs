//! What the agent has to tell the coordinator, kept while it is away: dyno state changes and
//! log lines, and the latest stats sample per running dyno. Producers never wait on the network; the connection drains this when it can.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use dyno_shared::logline::LogLine;
use dyno_shared::protocol::{DynoStats, DynoStatus};
use tokio::sync::Notify;

use crate::logbuf::{BATCH_MAX_BYTES, BATCH_MAX_LINES, LogBuffer};

#[derive(Debug, Default)]
struct Inner {
    states: Vec<DynoStatus>,
    logs: LogBuffer,
    /// Only the newest sample matters, so a newer one replaces the last.
    stats: BTreeMap<String, DynoStats>,
}

#[derive(Debug, Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
    states_ready: Notify,
    logs_ready: Notify,
    /// Woken when a batch of log lines was taken: readers that wait for room go on.
    log_room: Notify,
}

impl Outbox {
    pub fn new() -> Self {
        Outbox::default()
    }

    /// A buffer with room for `log_capacity` bytes of log lines (tests use small ones).
    pub fn with_log_capacity(log_capacity: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                states: Vec::new(),
                logs: LogBuffer::new(log_capacity),
                stats: BTreeMap::new(),
            }),
            ..Outbox::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind, still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a state change. While the coordinator is away only the latest running state per
    /// dyno is kept, but every final (`crashed`, `down`) one is.
    pub fn push_state(&self, status: DynoStatus) {
        let mut inner = self.lock();
        inner.states.push(status);
        coalesce(&mut inner.states);
        drop(inner);
        self.states_ready.notify_one();
    }

    pub fn take_states(&self) -> Vec<DynoStatus> {
        std::mem::take(&mut self.lock().states)
    }

    /// Puts states that could not be sent back in front of newer ones.
    pub fn requeue_states(&self, unsent: Vec<DynoStatus>) {
        if unsent.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let newer = std::mem::replace(&mut inner.states, unsent);
        inner.states.extend(newer);
        coalesce(&mut inner.states);
    }

    /// Replaces the dyno's pending stats sample.
    pub fn push_stats(&self, stats: DynoStats) {
        self.lock().stats.insert(stats.dyno_id.clone(), stats);
    }

    /// Every pending sample, by dyno id; a sample that fails to send is not retried.
    pub fn take_stats(&self) -> Vec<DynoStats> {
        std::mem::take(&mut self.lock().stats)
            .into_values()
            .collect()
    }

    /// Drops a pending sample of a dyno that is gone.
    pub fn forget_stats(&self, dyno_id: &str) {
        self.lock().stats.remove(dyno_id);
    }

    pub fn push_log(&self, line: LogLine) {
        let mut inner = self.lock();
        inner.logs.push(line);
        // The first line after the buffer emptied wakes the sender (it then waits a moment for
        // company); later ones only when a batch is full.
        let n = inner.logs.len();
        drop(inner);
        if n == 1 || n == BATCH_MAX_LINES {
            self.logs_ready.notify_one();
        }
    }

    /// The next batch of log lines for one `Logs` frame (empty when there is nothing).
    pub fn take_logs(&self) -> Vec<LogLine> {
        let batch = self
            .lock()
            .logs
            .take_batch(BATCH_MAX_LINES, BATCH_MAX_BYTES);
        if !batch.is_empty() {
            self.log_room.notify_waiters();
        }
        batch
    }

    /// Whether the log buffer is below three quarters full.
    pub fn has_log_room(&self) -> bool {
        let inner = self.lock();
        inner.logs.bytes() < inner.logs.capacity() / 4 * 3
    }

    /// Waits until the log buffer has room. Only for output that waits without blocking its
    /// dyno (an isolated dyno's output file): a pipe must be read at once.
    pub async fn wait_for_log_room(&self) {
        loop {
            let room = self.log_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.has_log_room() {
                return;
            }
            room.await;
        }
    }

    pub fn requeue_logs(&self, unsent: Vec<LogLine>) {
        if !unsent.is_empty() {
            self.lock().logs.requeue_front(unsent);
        }
    }

    /// Completes when a state change was queued since the last call.
    pub async fn states_ready(&self) {
        self.states_ready.notified().await
    }

    /// Lines still waiting after a send: the sender comes back for them after its other work.
    pub fn wake_if_logs_left(&self) {
        if !self.lock().logs.is_empty() {
            self.logs_ready.notify_one();
        }
    }

    /// Completes when log lines arrived in an empty buffer, or a full batch is waiting.
    pub async fn logs_ready(&self) {
        self.logs_ready.notified().await
    }
}

/// Drops running states that a later entry for the same dyno supersedes, keeping order.
fn coalesce(states: &mut Vec<DynoStatus>) {
    let mut keep = vec![true; states.len()];
    for i in 0..states.len() {
        if states[i].state.is_running()
            && states[i + 1..]
                .iter()
                .any(|later| later.dyno_id == states[i].dyno_id)
        {
            keep[i] = false;
        }
    }
    let mut flags = keep.into_iter();
    states.retain(|_| flags.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::protocol::DynoState;

    fn status(id: &str, state: DynoState, at: i64) -> DynoStatus {
        DynoStatus {
            dyno_id: id.into(),
            state,
            port: None,
            pid: None,
            exit_code: None,
            at,
            reason: None,
            generation: 1,
            healthy: true,
        }
    }

    #[test]
    fn keeps_latest_running_state_but_every_final_one() {
        let out = Outbox::new();
        out.push_state(status("a", DynoState::Starting, 1));
        out.push_state(status("b", DynoState::Starting, 2));
        out.push_state(status("a", DynoState::Up, 3));
        out.push_state(status("a", DynoState::Crashed, 4));
        out.push_state(status("a", DynoState::Starting, 5));
        out.push_state(status("a", DynoState::Up, 6));
        out.push_state(status("a", DynoState::Down, 7));
        let got: Vec<_> = out
            .take_states()
            .into_iter()
            .map(|s| (s.dyno_id, s.state, s.at))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b".to_string(), DynoState::Starting, 2),
                ("a".to_string(), DynoState::Crashed, 4),
                ("a".to_string(), DynoState::Down, 7),
            ]
        );
        assert!(out.take_states().is_empty());
    }

    #[test]
    fn stats_keep_the_latest_sample_per_dyno() {
        let out = Outbox::new();
        let sample = |id: &str, at| DynoStats {
            dyno_id: id.into(),
            at,
            memory_rss_bytes: 0,
            memory_cache_bytes: 0,
            memory_swap_bytes: 0,
            memory_quota_bytes: 0,
            cpu_usage_usec: 0,
            pids: 1,
        };
        out.push_stats(sample("b", 1));
        out.push_stats(sample("a", 2));
        out.push_stats(sample("b", 3));
        out.push_stats(sample("c", 4));
        out.forget_stats("c");
        let got: Vec<_> = out
            .take_stats()
            .into_iter()
            .map(|s| (s.dyno_id, s.at))
            .collect();
        assert_eq!(got, vec![("a".to_string(), 2), ("b".to_string(), 3)]);
        assert!(out.take_stats().is_empty());
    }

    #[test]
    fn requeued_states_go_first_and_newer_ones_win() {
        let out = Outbox::new();
        out.push_state(status("a", DynoState::Up, 3));
        out.requeue_states(vec![
            status("a", DynoState::Starting, 1),
            status("c", DynoState::Down, 2),
        ]);
        let got: Vec<_> = out.take_states().into_iter().map(|s| s.at).collect();
        assert_eq!(got, vec![2, 3]);
    }
}
