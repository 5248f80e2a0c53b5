//! The change stream behind `GET /stream`: one watcher notices new events, app set changes and
//! host changes a few times a second and fans them out to every subscriber, so clients are
//! pushed what changed and no longer poll everything.

use crate::store::Queries;
use crate::{Inner, now_ms};
use dyno_shared::api::{Event, StreamItem};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How often the watcher looks; a change reaches clients within this.
pub const TICK: Duration = Duration::from_millis(100);
/// Subscribers that fall further behind than this get told to resync.
pub const BACKLOG: usize = 1024;

pub fn channel() -> broadcast::Sender<StreamItem> {
    broadcast::channel(BACKLOG).0
}

/// Watches the store and the hosts until `stop`, broadcasting on `tx`.
pub async fn watch(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut last_seq = match inner.store().read(|r| r.last_event_seq()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "change stream cannot read the events; it stays quiet");
            return;
        }
    };
    let mut apps: Option<Vec<String>> = None;
    let mut hosts: Option<Vec<(String, String, bool)>> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => return,
        }
        if inner.stream.receiver_count() == 0 {
            // Nobody listens: only keep the position, so a new subscriber starts from now.
            if let Ok(s) = inner.store().read(|r| r.last_event_seq()) {
                last_seq = s;
            }
            apps = None;
            hosts = None;
            continue;
        }
        let read = inner.store().read(|r| {
            Ok((
                r.events_after(last_seq, 1000)?,
                r.apps()?.into_iter().map(|a| a.name).collect::<Vec<_>>(),
                r.hosts()?,
            ))
        });
        let (events, now_apps, now_hosts) = match read {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "change stream read failed");
                continue;
            }
        };
        for e in events {
            last_seq = e.seq;
            let _ = inner.stream.send(StreamItem::Event {
                seq: e.seq,
                app: e.app,
                event: Event {
                    at: dyno_shared::time::rfc3339_micros(e.at * 1000),
                    dyno: e.dyno,
                    message: e.message,
                },
            });
        }
        if apps.as_ref().is_some_and(|a| *a != now_apps) {
            let _ = inner.stream.send(StreamItem::Apps);
        }
        apps = Some(now_apps);
        let live = inner.liveness(&now_hosts, now_ms());
        let snapshot: Vec<(String, String, bool)> = now_hosts
            .iter()
            .map(|h| {
                let state = live.get(&h.name).map_or("lost", crate::Liveness::as_str);
                (h.name.clone(), state.to_string(), h.drained)
            })
            .collect();
        if hosts.as_ref().is_some_and(|h| *h != snapshot) {
            let _ = inner.stream.send(StreamItem::Hosts);
        }
        hosts = Some(snapshot);
    }
}
