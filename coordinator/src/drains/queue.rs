//! A drain's backlog: syslog messages waiting for delivery, bounded in bytes. When full, the
//! oldest go and are counted, so the next delivery can start with Heroku's L10 warning.

use std::collections::VecDeque;

/// Bytes of messages a drain holds while its receiver is slow or away.
pub const QUEUE_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Queue {
    msgs: VecDeque<Vec<u8>>,
    bytes: usize,
    cap: usize,
    dropped: u64,
    /// Unix microseconds of the first drop since the last delivery took the count.
    dropped_since: Option<i64>,
}

/// What a sender takes for one delivery.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Messages dropped before these, and since when.
    pub overflow: Option<(u64, i64)>,
    pub msgs: Vec<Vec<u8>>,
}

impl Queue {
    pub fn new(cap: usize) -> Queue {
        Queue {
            msgs: VecDeque::new(),
            bytes: 0,
            cap,
            dropped: 0,
            dropped_since: None,
        }
    }

    /// Queues `msg`, dropping the oldest to stay within the cap; true when this push started a
    /// run of drops (worth one warning).
    pub fn push(&mut self, msg: Vec<u8>, now: i64) -> bool {
        let mut started = false;
        while self.bytes + msg.len() > self.cap {
            let Some(old) = self.msgs.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            if self.dropped == 0 {
                self.dropped_since = Some(now);
                started = true;
            }
            self.dropped += 1;
        }
        self.bytes += msg.len();
        self.msgs.push_back(msg);
        started
    }

    /// Up to `max_msgs` messages and about `max_bytes` (always at least one message), oldest
    /// first, with the drop count so far, which starts again at zero.
    pub fn take(&mut self, max_msgs: usize, max_bytes: usize) -> Batch {
        let mut batch = Batch {
            overflow: self.dropped_since.take().map(|since| (self.dropped, since)),
            msgs: Vec::new(),
        };
        self.dropped = 0;
        let mut size = 0;
        while batch.msgs.len() < max_msgs {
            let Some(next) = self.msgs.front() else {
                break;
            };
            if !batch.msgs.is_empty() && size + next.len() > max_bytes {
                break;
            }
            size += next.len();
            self.bytes -= next.len();
            batch
                .msgs
                .push(self.msgs.pop_front().expect("front exists"));
        }
        batch
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.dropped == 0
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Vec<u8> {
        format!("{n:09}").into_bytes()
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts_them() {
        let mut q = Queue::new(100);
        let mut started = Vec::new();
        for n in 0..25 {
            started.push(q.push(msg(n), 1000 + n as i64));
        }
        // 11 messages of 9 bytes fit in 100 bytes; 14 were dropped, the first at message 11.
        assert_eq!(q.bytes(), 99);
        assert_eq!(started.iter().filter(|s| **s).count(), 1);
        assert!(started[11]);
        let b = q.take(4, 1 << 20);
        assert_eq!(b.overflow, Some((14, 1011)));
        assert_eq!(b.msgs, vec![msg(14), msg(15), msg(16), msg(17)]);
        // The count starts again after a take.
        let b = q.take(100, 1 << 20);
        assert_eq!(b.overflow, None);
        assert_eq!(b.msgs.len(), 7);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        // A new run of drops is reported from its own start.
        for n in 0..12 {
            q.push(msg(n), 5000 + n as i64);
        }
        assert_eq!(q.take(1, 1).overflow, Some((1, 5011)));
    }

    #[test]
    fn take_respects_the_byte_budget_but_always_moves() {
        let mut q = Queue::new(QUEUE_BYTES);
        for n in 0..5 {
            q.push(msg(n), 0);
        }
        assert_eq!(q.take(100, 20).msgs.len(), 2);
        assert_eq!(q.take(100, 1).msgs.len(), 1, "one message even over budget");
        assert_eq!(q.take(100, 1000).msgs.len(), 2);
        assert_eq!(q.take(100, 1000), Batch::default());
    }
}
