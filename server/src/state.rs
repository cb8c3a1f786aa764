//! The state every handler shares.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::Config;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::origin::AllowedHosts;
use crate::sse::Events;
use crate::store::Store;
use crate::zoom::Zooms;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub config: Arc<Config>,
    pub store: Store,
    pub events: Events,
    pub jobs: Arc<Jobs>,
    /// Zoomable pyramids of results being built.
    pub zooms: Arc<Zooms>,
    pub metrics: Arc<Metrics>,
    pub allowed_hosts: Arc<AllowedHosts>,
    /// One permit per event stream served.
    pub event_streams: Arc<Semaphore>,
    pub admission: Arc<Admission>,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
}
