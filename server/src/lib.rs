//! tilepipe's master. `main.rs` only parses the config and calls [`Server`].

pub mod admission;
pub mod api;
pub mod assemble;
pub mod auth;
pub mod batches;
pub mod cache;
pub mod config;
pub mod disk;
pub mod done_tiles;
pub mod error;
pub mod health;
pub mod http;
pub mod intake;
pub mod jobs;
pub mod kafka;
pub mod metrics;
pub mod origin;
pub mod preview;
pub mod rows;
pub mod sse;
pub mod state;
pub mod store;
pub mod tiff_writer;
pub mod upload;
pub mod workers;
pub mod zoom;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos_axum::{LeptosRoutes, generate_route_list};
use pipeline::wire::Topics;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::jobs::Jobs;
use crate::sse::Events;
use crate::state::AppState;
use crate::store::Store;

/// A started master: store open, topics created, consumers running, socket bound.
pub struct Server {
    listener: TcpListener,
    router: Router,
    limits: http::Limits,
    background: JoinSet<()>,
    shutdown: CancellationToken,
    jobs: Arc<Jobs>,
}

impl Server {
    pub async fn start(mut config: Config, leptos_options: LeptosOptions) -> anyhow::Result<Self> {
        config.resolve_token()?;
        let store = Store::open(&config.database_path()).await.context("opening the database")?;
        let topics = Topics::new(&config.topic_prefix);
        let events = Events::default();
        let metrics = Arc::new(metrics::Metrics::default());
        let (jobs, window) = engine(&config, &topics, store.clone(), events.clone(), Arc::clone(&metrics)).await?;

        let listener = TcpListener::bind(config.addr).await.with_context(|| format!("binding {}", config.addr))?;
        let limits = http::Limits {
            max_connections: config.max_connections,
            header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
        };
        let machine = gethostname::gethostname().to_string_lossy().into_owned();
        let shutdown = CancellationToken::new();
        let admission = Arc::new(admission::Admission::new(config.memory_budget));
        let needs = zoom::Needs {
            disk: (config.data_dir.clone(), config.min_free_disk),
            admission: Arc::clone(&admission),
            shutdown: shutdown.clone(),
        };
        let state = AppState {
            leptos_options,
            allowed_hosts: Arc::new(origin::AllowedHosts::new(&machine, &config.allowed_hosts)),
            event_streams: Arc::new(tokio::sync::Semaphore::new(config.max_event_streams)),
            admission,
            config: Arc::new(config),
            store,
            events,
            jobs: Arc::clone(&jobs),
            zooms: Arc::new(zoom::Zooms::new(needs)),
            metrics,
            shutdown: shutdown.clone(),
        };
        let background = background(&state, &topics, window).await?;
        let router = app(state);
        Ok(Self { listener, router, limits, background, shutdown, jobs })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound socket")
    }

    /// Serves until `signal` completes, then ends the event streams, lets
    /// open requests finish (bounded), and stops the consumers cleanly
    /// (leaving their groups, so partitions move at once).
    pub async fn serve(mut self, signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let watcher = tokio::spawn(async move {
            tokio::select! {
                _ = signal => shutdown.cancel(),
                _ = shutdown.cancelled() => {}
            }
        });
        http::serve(self.listener, self.router, self.limits, self.shutdown.clone()).await;
        self.shutdown.cancel();
        let _ = watcher.await;
        while self.background.join_next().await.is_some() {}
        self.jobs.release();
        Ok(())
    }
}

/// The job engine over the broker's topics (created if missing), and the
/// dispatch window it shares with the workers' liveness sweep.
async fn engine(
    config: &Config,
    topics: &Topics,
    store: Store,
    events: Events,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<(Arc<Jobs>, Arc<jobs::Window>)> {
    plumbing::kafka::ensure_topics(&config.brokers, topics, config.task_partitions).await?;
    let producer = kafka::producer(&config.brokers)?;
    let settings = jobs::Settings {
        jobs_dir: config.jobs_dir(),
        tile_size: config.tile_size,
        max_attempts: config.max_attempts,
        tile_timeout: Duration::from_secs(config.tile_timeout_secs),
    };
    let progress = kafka::TaskProgress::new(&config.brokers, topics)?;
    let partitions = kafka::partitions(&producer, &topics.tasks).await?;
    let window = jobs::Window::new(partitions, config.tasks_per_worker);
    let broker = jobs::Broker { producer, progress, topics: topics.clone(), window: Arc::clone(&window) };
    Ok((Arc::new(Jobs::new(store, events, broker, settings, metrics)), window))
}

/// Starts what the master does besides answering requests, until shutdown:
/// collecting results, the deadline sweep, heartbeats and liveness, and
/// retention; and resumes the jobs a previous run left unfinished, with
/// their shares of the memory budget reserved before any upload is taken.
async fn background(state: &AppState, topics: &Topics, window: Arc<jobs::Window>) -> anyhow::Result<JoinSet<()>> {
    let (config, jobs, store, events, shutdown) =
        (&state.config, &state.jobs, &state.store, &state.events, &state.shutdown);
    let mut background = JoinSet::new();
    let results = kafka::consumer(
        &config.brokers,
        (&topics.master_group, &topics.results),
        true,
        plumbing::kafka::PROMPT_FETCH_WAIT_MS,
        "results",
    )?;
    background.spawn(Arc::clone(jobs).collect_results(results, shutdown.clone()));
    background.spawn(Arc::clone(jobs).watch_deadlines(shutdown.clone()));
    disk::remove_orphans(&config.jobs_dir(), &upload::dir(&config.data_dir), store).await;
    // Jobs a previous run left unfinished carry on from their files.
    let unfinished = jobs.unfinished(&state.admission).await;
    // Not a background task: like a new upload's job, a resumed one does
    // not hold up shutdown (its state is in the store and on disk).
    tokio::spawn(Arc::clone(jobs).resume(unfinished, Arc::clone(&state.admission)));
    if let Some(retention) = config.retention {
        background.spawn(disk::keep_for(Arc::clone(jobs), store.clone(), retention, shutdown.clone()));
    }
    let heartbeats_group = format!("{}-heartbeats", topics.master_group);
    let heartbeats = kafka::consumer(
        &config.brokers,
        (&heartbeats_group, &topics.heartbeats),
        false,
        plumbing::kafka::RELAXED_FETCH_WAIT_MS,
        "heartbeats",
    )?;
    let timeout = Duration::from_secs(config.worker_timeout_secs);
    let beats = workers::consume_heartbeats(heartbeats, store.clone(), events.clone(), timeout, shutdown.clone());
    background.spawn(beats);
    let retention = Duration::from_secs(config.worker_retention_secs.max(config.worker_timeout_secs));
    let sweep = workers::sweep_liveness(store.clone(), events.clone(), (timeout, retention), window, shutdown.clone());
    background.spawn(sweep);
    Ok(background)
}

/// The whole HTTP surface: the JSON API, the SSE stream and the Leptos pages.
pub fn app(state: AppState) -> Router {
    let routes = generate_route_list(app::App);
    let leptos_options = state.leptos_options.clone();
    let body_timeout = Duration::from_secs(state.config.body_timeout_secs.max(1));
    Router::new()
        .nest(
            "/api",
            api::router(state.config.max_upload_bytes)
                .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token)),
        )
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .route("/metrics", axum::routing::get(health::metrics))
        .leptos_routes(&state, routes, move || app::shell(leptos_options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(app::shell))
        .layer(axum::middleware::from_fn_with_state(state.clone(), origin::check))
        .layer(axum::middleware::map_response(error::envelope))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers every response carries: no MIME sniffing, no framing, no referrer.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'; object-src 'none'; base-uri 'self'"),
    );
    response
}

/// Leptos options from cargo-leptos's environment when it built or runs the
/// binary, else the project's defaults (site in `LEPTOS_SITE_ROOT` or
/// `target/site`), so plain `cargo run` and tests work too.
pub fn leptos_options(addr: SocketAddr) -> anyhow::Result<LeptosOptions> {
    let from_cargo_leptos =
        option_env!("LEPTOS_OUTPUT_NAME").is_some() || std::env::var_os("LEPTOS_OUTPUT_NAME").is_some();
    let mut options = if from_cargo_leptos {
        leptos::config::get_configuration(None)?.leptos_options
    } else {
        LeptosOptions::builder()
            .output_name("tilepipe")
            .site_root(std::env::var("LEPTOS_SITE_ROOT").unwrap_or_else(|_| "target/site".into()))
            .build()
    };
    options.site_addr = addr;
    Ok(options)
}
