//! Live events: a broadcast channel fed by the job engine and the heartbeat
//! consumer, streamed to browsers as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use app::api::Event;
use axum::extract::State;
use axum::response::sse::{self, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Events(broadcast::Sender<Event>);

impl Default for Events {
    fn default() -> Self {
        // Room for a burst of tile events from a large job between two polls
        // of a slow client; a client that falls further behind skips ahead.
        Self(broadcast::channel(4096).0)
    }
}

impl Events {
    pub fn emit(&self, event: Event) {
        // No subscribers is normal: nobody has the page open.
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}

/// `GET /api/events`: at most `max_event_streams` at once (503 beyond);
/// every stream ends when the server shuts down.
pub async fn stream(
    State(events): State<Events>,
    State(streams): State<Arc<Semaphore>>,
    State(metrics): State<Arc<Metrics>>,
    State(shutdown): State<CancellationToken>,
) -> AppResult<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>> {
    let permit = streams.try_acquire_owned().map_err(|_| AppError::Busy {
        retry_after_secs: 30,
        message: "too many event streams are open; close a tab or try again shortly".into(),
    })?;
    // Counts this client for as long as its stream lives.
    let client = (ClientGuard::new(metrics.sse_clients.clone()), permit);
    let events = BroadcastStream::new(events.subscribe())
        .filter_map(move |item| {
            let _client = &client;
            async move {
                // A lagging client misses events; the UI refreshes its snapshot on reconnect.
                let event = item.ok()?;
                let data = serde_json::to_string(&event).ok()?;
                Some(Ok(sse::Event::default().event(event.name()).data(data)))
            }
        })
        .take_until(shutdown.cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct ClientGuard(Gauge);

impl ClientGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
