//! The state every handler shares.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use crate::config::Config;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::sse::Events;
use crate::store::Store;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub config: Arc<Config>,
    pub store: Store,
    pub events: Events,
    pub jobs: Arc<Jobs>,
    pub metrics: Arc<Metrics>,
}
