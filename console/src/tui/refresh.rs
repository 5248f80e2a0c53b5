//! When the data thread fetches the current view: pure rules, with the clock passed in. The
//! coordinator's change stream (`GET /stream`) drives the fetches: an item that can change what
//! the view shows refetches it at once. A slow poll remains for numbers that move without an
//! event (dyno memory and CPU, host heartbeats, billing amounts), and while the stream is down
//! every view is polled about once a second, as before there was a stream.

use super::model::Interest;
use dyno_shared::api::StreamItem;
use std::time::{Duration, Instant};

/// While the stream is down, the view is polled this often.
pub const POLL_WITHOUT_STREAM: Duration = Duration::from_secs(1);
/// While it is live, views with numbers that change without events are polled this often.
pub const POLL_WITH_STREAM: Duration = Duration::from_secs(5);
/// A triggering item waits this long for the rest of its burst (the coordinator sends the
/// changes it noticed in one 100 ms tick together), so a burst costs one fetch.
pub const SETTLE: Duration = Duration::from_millis(20);
/// Stream-triggered fetches are at least this far apart (after the end of the last fetch), so
/// a storm of events (scaling to 100 dynos) does not turn into a storm of requests.
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// Whether `item` can change what a view of `interest` shows.
pub fn triggers(interest: &Interest, item: &StreamItem) -> bool {
    match item {
        StreamItem::Ping => false,
        // Apps were created or destroyed, or this client fell behind and missed items:
        // whatever is on screen may be stale.
        StreamItem::Apps => true,
        StreamItem::Hosts => *interest == Interest::Hosts,
        StreamItem::Event { app, .. } => match interest.app() {
            Some(shown) => shown == app,
            // The Apps view counts every app's dynos, Hosts each host's dynos and memory, and
            // Billing projects every app's formation.
            None => true,
        },
    }
}

/// How often a view is polled besides the stream's triggers; `None`: never.
pub fn poll_every(interest: &Interest, stream_live: bool) -> Option<Duration> {
    if !stream_live {
        return Some(POLL_WITHOUT_STREAM);
    }
    match interest {
        // Memory and CPU of each dyno; each host's last heartbeat; the billed amounts grow
        // with every second a dyno runs.
        Interest::App(_) | Interest::Hosts | Interest::Billing => Some(POLL_WITH_STREAM),
        // Everything these show changes with an event (uptimes are counted on screen).
        Interest::Apps | Interest::Releases(_) | Interest::Config(_) | Interest::Logs(_) => None,
    }
}

/// The data thread's clock: what to fetch and when.
#[derive(Debug, Default)]
pub struct Schedule {
    interest: Option<Interest>,
    live: bool,
    due: Option<Instant>,
    /// When the last fetch ended.
    last: Option<Instant>,
}

impl Schedule {
    pub fn interest(&self) -> Option<&Interest> {
        self.interest.as_ref()
    }

    pub fn stream_live(&self) -> bool {
        self.live
    }

    /// When the next fetch is due; `None`: nothing to fetch until told.
    pub fn due(&self) -> Option<Instant> {
        self.interest.as_ref().and(self.due)
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.due().is_some_and(|d| d <= now)
    }

    /// A new view: fetch it at once.
    pub fn watch(&mut self, interest: Interest, now: Instant) {
        self.interest = Some(interest);
        self.due = Some(now);
    }

    /// Refresh now (ctrl-r, an action finished).
    pub fn refresh(&mut self, now: Instant) {
        self.due = Some(now);
    }

    /// The stream (re)connected: fetch at once, for what changed while it was down.
    pub fn stream_up(&mut self, now: Instant) {
        self.live = true;
        self.due = Some(now);
    }

    /// The stream dropped: fetch at once (is the coordinator still there?), then poll.
    pub fn stream_down(&mut self, now: Instant) {
        if self.live {
            self.live = false;
            self.due = Some(now);
        }
    }

    /// An item arrived; true when it makes the view due.
    pub fn item(&mut self, item: &StreamItem, now: Instant) -> bool {
        let Some(interest) = &self.interest else {
            return false;
        };
        if !triggers(interest, item) {
            return false;
        }
        let at = match self.last {
            Some(last) => (last + MIN_GAP).max(now + SETTLE),
            None => now + SETTLE,
        };
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
        true
    }

    /// A fetch ended at `now`: the next one is the view's poll, if it has one.
    pub fn fetched(&mut self, now: Instant) {
        self.last = Some(now);
        self.due = self
            .interest
            .as_ref()
            .and_then(|i| poll_every(i, self.live))
            .map(|every| now + every);
    }
}

/// Waits between reconnects of the stream: 0.5 s, doubling up to 8 s; back to the start after a
/// connection that lasted.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(8);
    /// A connection that stayed up this long was a good one.
    pub const HEALTHY: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// A connection ended (or never started) after `lasted`: how long to wait before the next.
    pub fn wait_after(&mut self, lasted: Duration) -> Duration {
        if lasted >= Self::HEALTHY {
            self.next = Self::FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::api::Event;

    fn event(app: &str) -> StreamItem {
        StreamItem::Event {
            seq: 7,
            app: app.into(),
            event: Event {
                at: "2026-11-29T18:55:28.123456+00:00".into(),
                dyno: "web.1".into(),
                message: "State changed from starting to up".into(),
            },
        }
    }

    fn all_views() -> Vec<Interest> {
        vec![
            Interest::Apps,
            Interest::App("shop".into()),
            Interest::Hosts,
            Interest::Releases("shop".into()),
            Interest::Config("shop".into()),
            Interest::Billing,
            Interest::Logs("shop".into()),
        ]
    }

    #[test]
    fn which_items_refetch_which_views() {
        for view in all_views() {
            // An event of the app shown, or of any app in the every-app views.
            assert!(triggers(&view, &event("shop")), "{view:?}");
            let other = triggers(&view, &event("blog"));
            let every_app = matches!(view, Interest::Apps | Interest::Hosts | Interest::Billing);
            assert_eq!(other, every_app, "{view:?}: another app's event");
            // `apps` (also: the client lagged) refetches everything; `hosts` only Hosts;
            // a ping nothing.
            assert!(triggers(&view, &StreamItem::Apps), "{view:?}");
            assert_eq!(
                triggers(&view, &StreamItem::Hosts),
                view == Interest::Hosts,
                "{view:?}"
            );
            assert!(!triggers(&view, &StreamItem::Ping), "{view:?}");
        }
    }

    #[test]
    fn only_numbers_without_events_are_polled_while_the_stream_is_live() {
        let polled: Vec<Interest> = all_views()
            .into_iter()
            .filter(|v| poll_every(v, true).is_some())
            .collect();
        assert_eq!(
            polled,
            [
                Interest::App("shop".into()),
                Interest::Hosts,
                Interest::Billing
            ]
        );
        for v in all_views() {
            if let Some(every) = poll_every(&v, true) {
                assert_eq!(every, POLL_WITH_STREAM);
            }
            assert_eq!(poll_every(&v, false), Some(POLL_WITHOUT_STREAM), "{v:?}");
        }
    }

    #[test]
    fn a_view_change_fetches_at_once_then_polls_by_the_streams_state() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.due(), None, "nothing to fetch before a view");
        assert!(!s.item(&StreamItem::Apps, t0), "no view, no trigger");
        s.watch(Interest::Apps, t0);
        assert!(s.is_due(t0));
        // No stream yet: the old once-a-second poll.
        s.fetched(t0);
        assert_eq!(s.due(), Some(t0 + POLL_WITHOUT_STREAM));
        // The stream connects: fetch now (what changed meanwhile), then no poll for Apps.
        let t1 = t0 + Duration::from_millis(300);
        s.stream_up(t1);
        assert!(s.is_due(t1));
        s.fetched(t1);
        assert_eq!(s.due(), None);
        // The App view polls slowly for its dynos' memory and CPU.
        s.watch(Interest::App("shop".into()), t1);
        assert!(s.is_due(t1));
        s.fetched(t1);
        assert_eq!(s.due(), Some(t1 + POLL_WITH_STREAM));
        // The stream drops: fetch at once (the coordinator may be gone), then every second.
        let t2 = t1 + Duration::from_secs(1);
        s.stream_down(t2);
        assert!(s.is_due(t2));
        s.fetched(t2);
        assert_eq!(s.due(), Some(t2 + POLL_WITHOUT_STREAM));
        // A second "down" (a failed reconnect) changes nothing.
        s.stream_down(t2 + Duration::from_millis(10));
        assert_eq!(s.due(), Some(t2 + POLL_WITHOUT_STREAM));
    }

    #[test]
    fn items_refetch_soon_but_a_burst_costs_one_fetch() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.stream_up(t0);
        s.watch(Interest::App("shop".into()), t0);
        s.fetched(t0);
        // Another app's event, a host change, a ping: nothing.
        let t1 = t0 + Duration::from_secs(1);
        assert!(!s.item(&event("blog"), t1));
        assert!(!s.item(&StreamItem::Hosts, t1));
        assert!(!s.item(&StreamItem::Ping, t1));
        assert_eq!(s.due(), Some(t0 + POLL_WITH_STREAM));
        // The app's event: due after the settle time; more of the burst keep that time.
        assert!(s.item(&event("shop"), t1));
        assert_eq!(s.due(), Some(t1 + SETTLE));
        assert!(s.item(&event("shop"), t1 + Duration::from_millis(5)));
        assert_eq!(s.due(), Some(t1 + SETTLE));
        assert!(!s.is_due(t1) && s.is_due(t1 + SETTLE));
        let t2 = t1 + SETTLE;
        s.fetched(t2);
        // Right after a fetch, an event waits out the minimum gap.
        let t3 = t2 + Duration::from_millis(10);
        assert!(s.item(&event("shop"), t3));
        assert_eq!(s.due(), Some(t2 + MIN_GAP));
        // An immediate refresh is not held back by the gap.
        s.refresh(t3);
        assert!(s.is_due(t3));
    }

    #[test]
    fn reconnects_back_off_and_reset_after_a_good_connection() {
        let mut b = Backoff::new();
        let quick = Duration::from_millis(50);
        let waits: Vec<Duration> = (0..6).map(|_| b.wait_after(quick)).collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 8000].map(Duration::from_millis)
        );
        assert_eq!(b.wait_after(Duration::from_secs(60)), Backoff::FIRST);
        assert_eq!(b.wait_after(quick), Duration::from_secs(1));
    }
}
