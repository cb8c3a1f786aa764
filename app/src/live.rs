//! The live view of the system every page reads: jobs and workers, seeded
//! from the API and kept current by the server-sent event stream.

use std::collections::{HashMap, VecDeque};

use leptos::prelude::*;

use crate::api::{Event, Job, TileDone, TileFailed, Worker};

#[derive(Clone, Copy)]
pub struct Live {
    pub jobs: RwSignal<HashMap<String, Job>>,
    pub workers: RwSignal<HashMap<String, Worker>>,
    pub connected: RwSignal<bool>,
    /// Milliseconds since the epoch, ticking every second (for ages).
    pub now: RwSignal<i64>,
    /// Tiles finished while the page was open, per job, in arrival order
    /// (readers keep a cursor and take only what is new).
    pub tiles: RwSignal<HashMap<String, Vec<TileDone>>>,
    /// Workers' reports of tiles they could not do, per job, in arrival order.
    pub failures: RwSignal<HashMap<String, Vec<TileFailed>>>,
    /// Tiles finished per second over the last [`THROUGHPUT_WINDOW_SECS`]:
    /// (second since the epoch, count), oldest first.
    pub throughput: RwSignal<Counts>,
    /// The same per worker, over the last [`RATE_WINDOW_SECS`].
    pub worker_throughput: RwSignal<HashMap<String, Counts>>,
    /// The second the event stream first opened: rates average over no
    /// more than the time the page has been watching.
    pub watching_since: RwSignal<Option<i64>>,
    /// Each worker's CPU percent and resident bytes from its recent
    /// heartbeats, oldest first, for the dashboard's sparklines.
    pub worker_usage: RwSignal<HashMap<String, VecDeque<(f32, u64)>>>,
    /// This browser's clock less the master's, as far as tile events tell
    /// (the smallest difference seen between a result's arrival at the
    /// master and its event here): drawing "now" by the master's clock keeps
    /// the task stream right when the two clocks differ.
    pub clock_offset: RwSignal<Option<i64>>,
}

/// Heartbeats a worker's sparklines show.
pub const USAGE_SAMPLES: usize = 60;

/// Events per second since the epoch, oldest first.
pub type Counts = VecDeque<(i64, u32)>;

/// How far back a "now" rate looks.
pub const RATE_WINDOW_SECS: i64 = 10;

/// How far back the dashboard's throughput chart looks.
pub const THROUGHPUT_WINDOW_SECS: i64 = 300;

// Updates come only from the browser; the server renders the empty state.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
impl Live {
    pub fn provide() -> Self {
        let live = Live {
            jobs: RwSignal::new(HashMap::new()),
            workers: RwSignal::new(HashMap::new()),
            connected: RwSignal::new(false),
            now: RwSignal::new(0),
            tiles: RwSignal::new(HashMap::new()),
            failures: RwSignal::new(HashMap::new()),
            throughput: RwSignal::new(Default::default()),
            worker_throughput: RwSignal::new(HashMap::new()),
            watching_since: RwSignal::new(None),
            worker_usage: RwSignal::new(HashMap::new()),
            clock_offset: RwSignal::new(None),
        };
        provide_context(live);
        live
    }

    pub fn get() -> Self {
        expect_context()
    }

    /// Opens the event stream and loads a snapshot; browser only.
    pub fn connect(self) {
        #[cfg(feature = "hydrate")]
        stream::connect(self);
    }

    pub fn apply(self, event: Event) {
        match event {
            Event::Job(job) => self.upsert_job(job),
            Event::Worker(worker) => self.upsert_worker(worker),
            Event::JobDeleted(id) => {
                self.jobs.update(|jobs| {
                    jobs.remove(&id);
                });
                self.tiles.update(|tiles| {
                    tiles.remove(&id);
                });
                self.failures.update(|failures| {
                    failures.remove(&id);
                });
            }
            Event::Tile(tile) => self.record_tile(tile),
            Event::TileFailed(failure) => {
                self.failures.update(|f| f.entry(failure.job_id.clone()).or_default().push(failure))
            }
            Event::WorkerGone(id) => {
                self.workers.update(|workers| {
                    workers.remove(&id);
                });
                self.worker_throughput.update(|rates| {
                    rates.remove(&id);
                });
                self.worker_usage.update(|usage| {
                    usage.remove(&id);
                });
            }
        }
    }

    /// Forgets the tile events and failures of jobs that finished more than
    /// `keep_ms` ago: a page left open on a busy cluster stays small. (A job
    /// page copies what it needs, and one opened later reads the stored tiles.)
    pub fn forget_old_tiles(self, keep_ms: i64) {
        let before = self.now.get_untracked() - keep_ms;
        let old: Vec<String> = self.jobs.with_untracked(|jobs| {
            jobs.values().filter(|j| j.finished_at.is_some_and(|f| f < before)).map(|j| j.id.clone()).collect()
        });
        let held = |id: &String| {
            self.tiles.with_untracked(|t| t.contains_key(id)) || self.failures.with_untracked(|f| f.contains_key(id))
        };
        let old: Vec<String> = old.into_iter().filter(held).collect();
        if old.is_empty() {
            return;
        }
        self.tiles.update(|t| old.iter().for_each(|id| drop(t.remove(id))));
        self.failures.update(|f| old.iter().for_each(|id| drop(f.remove(id))));
    }

    /// The master's clock now, as best known, in milliseconds since the epoch.
    pub fn master_now(self) -> i64 {
        self.now.get() - self.clock_offset.get().unwrap_or(0)
    }

    fn record_tile(self, tile: TileDone) {
        #[cfg(feature = "hydrate")]
        {
            let offset = web_sys::js_sys::Date::now() as i64 - tile.done_at;
            if self.clock_offset.get_untracked().is_none_or(|known| offset < known) {
                self.clock_offset.set(Some(offset));
            }
        }
        let second = self.now.get_untracked() / 1000;
        self.throughput.update(|t| count(t, second, THROUGHPUT_WINDOW_SECS));
        self.worker_throughput
            .update(|w| count(w.entry(tile.worker_id.clone()).or_default(), second, RATE_WINDOW_SECS));
        self.tiles.update(|tiles| tiles.entry(tile.job_id.clone()).or_default().push(tile));
    }

    /// Keeps whichever copy is further along, so a late snapshot never
    /// undoes a newer event.
    pub fn upsert_job(self, job: Job) {
        self.jobs.update(|jobs| match jobs.get(&job.id) {
            Some(old) if rank(old) > rank(&job) => {}
            _ => {
                jobs.insert(job.id.clone(), job);
            }
        });
    }

    pub fn upsert_worker(self, worker: Worker) {
        let fresh =
            self.workers.with_untracked(|w| w.get(&worker.id).is_none_or(|old| old.last_seen < worker.last_seen));
        if let (true, Some(cpu), Some(rss)) = (fresh, worker.cpu_percent, worker.rss_bytes) {
            self.worker_usage.update(|usage| {
                let samples = usage.entry(worker.id.clone()).or_default();
                samples.push_back((cpu, rss));
                while samples.len() > USAGE_SAMPLES {
                    samples.pop_front();
                }
            });
        }
        self.workers.update(|workers| match workers.get(&worker.id) {
            Some(old) if old.last_seen > worker.last_seen => {}
            _ => {
                workers.insert(worker.id.clone(), worker);
            }
        });
    }
}

/// Counts one event at `second`, forgetting those older than `window`.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn count(counts: &mut Counts, second: i64, window: i64) {
    match counts.back_mut() {
        Some((s, n)) if *s == second => *n += 1,
        _ => counts.push_back((second, 1)),
    }
    while counts.front().is_some_and(|(s, _)| *s <= second - window) {
        counts.pop_front();
    }
}

/// Events per second over the last [`RATE_WINDOW_SECS`] before `now_secs`,
/// or over the seconds since `watching_since` when that is shorter (the
/// current second counts as a whole one).
pub fn rate(counts: &Counts, now_secs: i64, watching_since: Option<i64>) -> f64 {
    let window = watching_since.map_or(RATE_WINDOW_SECS, |since| (now_secs - since + 1).clamp(1, RATE_WINDOW_SECS));
    let recent: u32 = counts.iter().filter(|(s, _)| now_secs - s < window).map(|(_, n)| n).sum();
    f64::from(recent) / window as f64
}

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn rank(job: &Job) -> (bool, u32, u8) {
    let status = match job.status {
        crate::api::JobStatus::Queued => 0,
        crate::api::JobStatus::Running => 1,
        crate::api::JobStatus::Done | crate::api::JobStatus::Failed | crate::api::JobStatus::Cancelled => 2,
    };
    (job.finished_at.is_some(), job.tiles_done, status)
}

/// The event stream: the browser's side of `GET /api/events`.
#[cfg(feature = "hydrate")]
mod stream {
    use leptos::prelude::*;
    use leptos::task::spawn_local;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;

    use super::Live;
    use crate::api::{Event, Job, Worker};
    use crate::client::{get_json, token};

    /// Connects the live view: an EventSource for the lifetime of the page (the
    /// browser reconnects it by itself), a fresh snapshot on every (re)connect so
    /// nothing missed while offline stays missing, and a one-second clock.
    pub(super) fn connect(live: Live) {
        // Browsers cannot give an EventSource headers: a token goes in the query.
        let url = match token() {
            Some(token) => format!("/api/events?token={}", web_sys::js_sys::encode_uri_component(&token)),
            None => "/api/events".to_owned(),
        };
        let Ok(source) = web_sys::EventSource::new(&url) else {
            return;
        };
        for name in ["job", "worker", "tile", "tile_failed", "job_deleted", "worker_gone"] {
            let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                if let Some(event) = e.data().as_string().and_then(|s| serde_json::from_str::<Event>(&s).ok()) {
                    live.apply(event);
                }
            });
            let _ = source.add_event_listener_with_callback(name, on_message.as_ref().unchecked_ref());
            on_message.forget();
        }
        let on_open = Closure::<dyn FnMut()>::new(move || {
            live.connected.set(true);
            if live.watching_since.get_untracked().is_none() {
                live.watching_since.set(Some(js_sys_now() / 1000));
            }
            spawn_local(load_snapshot(live));
        });
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        on_open.forget();
        let on_error = Closure::<dyn FnMut()>::new(move || live.connected.set(false));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        on_error.forget();
        std::mem::forget(source);

        live.now.set(js_sys_now());
        let _ = set_interval_with_handle(move || live.now.set(js_sys_now()), std::time::Duration::from_secs(1));
        // Kept a little longer than the dashboard's two-minute task stream shows.
        let _ = set_interval_with_handle(move || live.forget_old_tiles(180_000), std::time::Duration::from_secs(30));
    }

    fn js_sys_now() -> i64 {
        web_sys::js_sys::Date::now() as i64
    }

    async fn load_snapshot(live: Live) {
        if let Ok(jobs) = get_json::<Vec<Job>>("/api/jobs").await {
            jobs.into_iter().for_each(|j| live.upsert_job(j));
        }
        if let Ok(workers) = get_json::<Vec<Worker>>("/api/workers").await {
            workers.into_iter().for_each(|w| live.upsert_worker(w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_averages_over_the_time_watched_at_most_the_window() {
        // 25 tiles a second, watched from second 100 up to `now`.
        let seen = |now: i64| -> Counts { (100..=now).map(|s| (s, 25)).collect() };
        assert_eq!(rate(&seen(100), 100, Some(100)), 25.0);
        assert_eq!(rate(&seen(102), 102, Some(100)), 25.0);
        assert_eq!(rate(&seen(120), 120, Some(100)), 25.0);
        // Averaged over the whole window, as before: 3 seconds of 10.
        assert_eq!(rate(&seen(102), 102, None), 7.5);
        // A quiet spell shows as one.
        assert_eq!(rate(&seen(120), 135, Some(100)), 0.0);
    }

    #[test]
    fn tile_events_of_jobs_finished_long_ago_are_forgotten() {
        Owner::new().with(|| {
            let live = Live::provide();
            let job = |id: &str, finished_at| Job {
                id: id.into(),
                filename: "f.png".into(),
                status: crate::api::JobStatus::Done,
                width: 1024,
                height: 1024,
                tile_size: 512,
                ops: Vec::new(),
                tiles_total: 4,
                tiles_done: 4,
                input_bytes: 1,
                error: None,
                created_at: 0,
                finished_at,
                stages: None,
                output: Default::default(),
                cached_from: None,
                batch_id: None,
            };
            live.now.set(1_000_000);
            live.upsert_job(job("old", Some(1_000)));
            live.upsert_job(job("recent", Some(990_000)));
            live.upsert_job(job("running", None));
            for id in ["old", "recent", "running", "unknown"] {
                live.tiles.update(|t| drop(t.insert(id.into(), Vec::new())));
            }
            live.forget_old_tiles(180_000);
            let mut kept: Vec<String> = live.tiles.with(|t| t.keys().cloned().collect());
            kept.sort();
            assert_eq!(kept, ["recent", "running", "unknown"]);
        });
    }
}
