//! A job's page: live progress, its tile map, its timeline (stages,
//! throughput and the task stream), and the result when done. Its URL is the
//! job's, so a reload (or a link from the dashboard) shows the same live
//! state.

use std::collections::HashSet;

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{Job, JobStatus, Tile, WorkerStatus};
use crate::live::Live;
use crate::pages::chain::describe;
use crate::pages::job_timeline::JobTimeline;
use crate::pages::tiles::TileMap;
use crate::pages::zoom::Explore;
use crate::pages::{human_bytes, human_duration};
use crate::timeline::{self, Axis, Bar, Failure};

/// How far back the "now" rates look.
const RATE_WINDOW_MS: i64 = 10_000;

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.read().get("id").unwrap_or_default());
    // Everything below belongs to one job: another job's page starts afresh.
    move || view! { <JobView id=id.get() /> }.into_any()
}

#[component]
fn JobView(id: String) -> impl IntoView {
    let live = Live::get();
    let job = Memo::new({
        let id = id.clone();
        move |_| live.jobs.with(|jobs| jobs.get(&id).cloned())
    });
    // The snapshot holds only recent jobs: fetch this one in any case, and
    // its tiles as stored (those done before the page opened).
    let missing = RwSignal::new(false);
    let seeded = RwSignal::new(None::<Vec<Tile>>);
    #[cfg(feature = "hydrate")]
    {
        let id = id.clone();
        leptos::task::spawn_local(async move {
            match crate::client::get_json::<Job>(&format!("/api/jobs/{id}")).await {
                Ok(job) => live.upsert_job(job),
                Err(_) => missing.set(true),
            }
            if let Ok(tiles) = crate::client::get_json::<Vec<Tile>>(&format!("/api/jobs/{id}/tiles")).await {
                seeded.set(Some(tiles));
            }
        });
    }
    let bars = job_bars(live, id.clone(), seeded.read_only());
    let failures = Memo::new({
        let id = id.clone();
        move |_| live.failures.with(|f| f.get(&id).map(|v| v.iter().map(Failure::from).collect()).unwrap_or_default())
    });
    let axis = Memo::new(move |_| {
        let now = live.master_now();
        job.with(|j| j.as_ref().map(|j| job_axis(j, &bars.read(), now)).unwrap_or(Axis { start: now, end: now + 1 }))
    });
    let rate = Memo::new(move |_| {
        let now = live.master_now();
        bars.with(|bars| {
            let since = bars.iter().map(|b| b.start).min()?;
            Some(timeline::recent_rate(bars, now, since, RATE_WINDOW_MS))
        })
    });

    // The map is built once per job, not on every progress event; a job
    // answered from the cache processed no tile, so it has none.
    let grid = Memo::new(move |_| {
        job.with(|j| {
            j.as_ref().filter(|j| j.cached_from.is_none()).map(|j| (j.id.clone(), j.width, j.height, j.tile_size))
        })
    });
    let tile_map = move || {
        grid.get().map(|(id, width, height, tile_size)| {
            view! { <TileMap id width height tile_size seeded=seeded.read_only() /> }.into_any()
        })
    };
    // Beside it, the result once done; the live numbers until then.
    let done = Memo::new(move |_| {
        job.with(|j| j.as_ref().filter(|j| j.status == JobStatus::Done).map(|j| (j.id.clone(), j.width, j.height)))
    });
    let side = move || match done.get() {
        Some((id, width, height)) => view! { <BeforeAfter id width height /> }.into_any(),
        None => view! { <LiveNumbers job rate bars /> }.into_any(),
    };
    // Below both, as wide as the page: the result to explore.
    let explore = move || done.get().map(|(id, ..)| view! { <Explore id /> });
    let timeline = move || grid.get().map(|_| view! { <JobTimeline job bars failures axis /> }.into_any());

    let title = move || job.with(|j| j.as_ref().map(|j| j.filename.clone()));
    view! {
        <section class="job job-page">
            <h1>{title}</h1>
            <JobCard job missing />
            <div class="job-views">
                <div class="job-map">{tile_map}</div>
                <div class="job-side">{side}</div>
            </div>
            {explore}
            {timeline}
            <p><a href="/">"Process another image"</a></p>
        </section>
    }
    .into_any()
}

/// The job in one card: its size and chain, its progress, and its result
/// or its error once it ends.
#[component]
fn JobCard(job: Memo<Option<Job>>, missing: RwSignal<bool>) -> impl IntoView {
    let live = Live::get();
    move || {
        let Some(job) = job.get() else {
            return if missing.get() {
                view! { <p class="error" role="alert">"No such job."</p> }.into_any()
            } else {
                view! { <p class="status">"Loading the job…"</p> }.into_any()
            };
        };
        let percent = job.progress();
        let status = job.status;
        let elapsed = job.finished_at.unwrap_or_else(|| live.now.get()) - job.created_at;
        let megapixels = f64::from(job.width) * f64::from(job.height) / 1e6;
        let throughput = (status == JobStatus::Done && elapsed > 0)
            .then(|| format!(" · {:.1} MP/s", megapixels / (elapsed as f64 / 1000.0)));
        view! {
            <div class="job-card" data-status=status.as_str()>
                <div class="job-head">
                    <span class="muted">
                        {format!(
                            "{}×{} · {} · {} tiles · {}",
                            job.width,
                            job.height,
                            human_bytes(job.input_bytes),
                            job.tiles_total,
                            job.output.label()
                        )}
                    </span>
                    <span class="muted ops">{job.ops.iter().map(describe).collect::<Vec<_>>().join(" → ")}</span>
                </div>
                <div class="bar" role="progressbar" aria-label="Job progress" aria-valuemin="0" aria-valuemax="100" aria-valuenow=format!("{percent:.0}")>
                    <div class="fill" style:width=format!("{percent:.1}%")></div>
                </div>
                <p class="status" id="status" aria-live="polite">
                    <span id="percent">{format!("{percent:.0} %")}</span>
                    " · " {status.as_str()} " · " {job.tiles_done} "/" {job.tiles_total} " tiles · "
                    {human_duration(elapsed)} {throughput}
                </p>
                {job.cached_from.clone().map(|source| view! {
                    <p class="small" id="cached">
                        "Answered from the result cache at once: "
                        <a href=format!("/jobs/{source}")>"an earlier job"</a>
                        " had the same image, operations and output. No tile was processed again."
                    </p>
                })}
                {match status {
                    JobStatus::Done => view! {
                        <a id="download" class="button" href=format!("/api/jobs/{}/result", job.id) download>
                            "Download result"
                        </a>
                    }.into_any(),
                    JobStatus::Failed => view! {
                        <p class="error" role="alert">{job.error.clone().unwrap_or_else(|| "the job failed".into())}</p>
                    }.into_any(),
                    _ => ().into_any(),
                }}
            </div>
        }
        .into_any()
    }
}

/// The job's bars: its stored tiles, then each tile event as it comes
/// (each tile once, whichever told of it first).
fn job_bars(live: Live, id: String, seeded: ReadSignal<Option<Vec<Tile>>>) -> RwSignal<Vec<Bar>> {
    let bars = RwSignal::new(Vec::new());
    let have = StoredValue::new(HashSet::<u32>::new());
    let add = move |new: Vec<Bar>| {
        let fresh: Vec<Bar> =
            have.try_update_value(|have| new.into_iter().filter(|b| have.insert(b.tile)).collect()).unwrap_or_default();
        if !fresh.is_empty() {
            bars.update(|bars| bars.extend(fresh));
        }
    };
    Effect::new({
        let id = id.clone();
        move || {
            seeded.with(|tiles| add(tiles.iter().flatten().filter_map(|t| Bar::from_tile(&id, t)).collect()));
        }
    });
    let cursor = StoredValue::new(0usize);
    Effect::new(move || {
        live.tiles.with(|tiles| {
            let Some(done) = tiles.get(&id) else { return };
            add(done[cursor.get_value().min(done.len())..].iter().map(Bar::from_event).collect());
            cursor.set_value(done.len());
        });
    });
    bars
}

/// From the job's first moment (decoding, or its first tile) to its end, or
/// to now while it runs.
fn job_axis(job: &Job, bars: &[Bar], now: i64) -> Axis {
    let spans = job.stages.as_ref().and_then(timeline::stage_spans).unwrap_or_default();
    let first = bars.iter().map(|b| b.start).chain(spans.iter().map(|s| s.1)).min();
    let last = bars.iter().map(|b| b.end).chain(spans.iter().map(|s| s.2)).max();
    let start = first.map_or(job.created_at, |f| f.min(job.created_at));
    let end = match job.finished_at {
        Some(finished) => last.map_or(finished, |l| l.max(finished)),
        None => last.map_or(now, |l| l.max(now)),
    };
    Axis { start, end: end.max(start + 1_000) }
}

/// The numbers that matter while a job runs: its rates now, what is left,
/// and how many workers are at it.
#[component]
fn LiveNumbers(job: Memo<Option<Job>>, rate: Memo<Option<(f64, f64)>>, bars: RwSignal<Vec<Bar>>) -> impl IntoView {
    let live = Live::get();
    let (tiles_per_second, mb_per_second) =
        (move || rate.get().map_or(0.0, |r| r.0), move || rate.get().map_or(0.0, |r| r.1));
    let left = move || {
        job.with(|j| {
            let j = j.as_ref()?;
            let remaining = j.tiles_total - j.tiles_done;
            let per_second = tiles_per_second();
            Some(match (j.status.is_finished(), remaining, per_second > 0.0) {
                (true, _, _) => "—".to_owned(),
                (false, 0, _) => "finishing".to_owned(),
                (false, _, true) => {
                    format!("≈ {}", human_duration((f64::from(remaining) / per_second * 1000.0) as i64))
                }
                (false, _, false) => "…".to_owned(),
            })
        })
    };
    // Computed once per change, for both numbers of the card.
    let workers = Memo::new(move |_| {
        let busy: HashSet<String> = {
            let now = live.master_now();
            bars.with(|b| b.iter().filter(|b| b.end > now - RATE_WINDOW_MS).map(|b| b.worker.clone()).collect())
        };
        let alive = live.workers.with(|w| w.values().filter(|w| w.status == WorkerStatus::Alive).count());
        (busy.len(), alive)
    });
    view! {
        <div class="system live-numbers" id="job-numbers">
            <div class="stat">
                <span class="label">"Tiles/s"</span>
                <span class="value" id="job-tiles-per-second">{move || format!("{:.1}", tiles_per_second())}</span>
                <span class="muted small">"over the last 10 s"</span>
            </div>
            <div class="stat">
                <span class="label">"Results MB/s"</span>
                <span class="value" id="job-mb-per-second">{move || format!("{:.1}", mb_per_second())}</span>
                <span class="muted small">"from the workers, over the broker"</span>
            </div>
            <div class="stat">
                <span class="label">"Time left"</span>
                <span class="value">{left}</span>
                <span class="muted small">"at the current rate"</span>
            </div>
            <div class="stat">
                <span class="label">"Workers"</span>
                <span class="value">{move || workers.get().0}</span>
                <span class="muted small">{move || format!("of {} alive sent results lately", workers.get().1)}</span>
            </div>
        </div>
    }
}

/// The original and the result on top of each other, split by a slider:
/// previews of at most 2048 px a side, however large the image. The image's
/// size holds their place while they load, so nothing below them moves.
#[component]
fn BeforeAfter(id: String, width: u32, height: u32) -> impl IntoView {
    let split = RwSignal::new(50.0);
    view! {
        <figure class="compare" style=move || format!("--split: {}%", split.get())>
            <img class="before" src=format!("/api/jobs/{id}/preview/input") alt="The original" width=width height=height loading="lazy" />
            <img class="after" src=format!("/api/jobs/{id}/preview/result") alt="The result" width=width height=height loading="lazy" />
            <input
                type="range"
                min="0"
                max="100"
                step="0.5"
                aria-label="Original on the left, result on the right"
                prop:value=move || split.get()
                on:input=move |ev| split.set(event_target_value(&ev).parse().unwrap_or(50.0))
            />
            <figcaption class="muted small">"Original ← drag → result"</figcaption>
        </figure>
    }
}
