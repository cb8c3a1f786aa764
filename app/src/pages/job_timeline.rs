//! A job's timeline: its stages, its rates over its life and its task
//! stream, on one time axis.

use leptos::prelude::*;

use crate::api::{Job, WorkerStatus};
use crate::live::Live;
use crate::pages::stream::{Colour, TaskStream, Ticks};
use crate::timeline::{self, Axis, Bar, Failure};

/// Stages, throughput and the task stream, on one time axis.
#[component]
pub fn JobTimeline(
    job: Memo<Option<Job>>,
    bars: RwSignal<Vec<Bar>>,
    failures: Memo<Vec<Failure>>,
    axis: Memo<Axis>,
) -> impl IntoView {
    let live = Live::get();
    let lanes = Memo::new(move |_| {
        let running = job.with(|j| j.as_ref().is_some_and(|j| !j.status.is_finished()));
        // While it runs, an idle worker gets an empty lane: starved or stuck shows.
        let alive: Vec<String> = if running {
            live.workers
                .with(|w| w.values().filter(|w| w.status == WorkerStatus::Alive).map(|w| w.id.clone()).collect())
        } else {
            Vec::new()
        };
        bars.with(|b| failures.with(|f| timeline::lanes(b, f, alive.iter().map(String::as_str))))
    });
    let first_task = move || {
        let ms = job.with(|j| j.as_ref()?.stages?.first_task_ms)?;
        Some(
            view! { " The first task was on the broker " <span id="first-task">{format!("{ms:.0} ms")}</span> " after the upload's last byte." },
        )
    };
    // Slices of a quarter second at least, at most 60: a short job's chart
    // is not all spikes.
    let buckets = Memo::new(move |_| {
        let axis = axis.get();
        bars.with(|b| timeline::rates(b, axis, (axis.span() / 250).clamp(1, 60) as usize))
    });
    view! {
        <section class="timeline-panel" aria-labelledby="timeline-title">
            <h2 id="timeline-title">"Timeline"</h2>
            <div class="timeline" id="task-stream">
                <StageRows job axis />
                <RateRow name="tiles/s" class="rate-chart" label="Tiles per second over the job's life" buckets pick=|r| r.0 />
                <RateRow
                    name="MB/s"
                    class="rate-chart bytes"
                    label="Megabytes of results per second over the job's life"
                    buckets
                    pick=|r| r.1
                />
                <TaskStream bars failures lanes axis colour=Colour::ByWorker ticks=Ticks::Elapsed lane_height=22.0 />
            </div>
            <p class="legend muted small">
                "Each bar is a tile, from when its worker started it to when its result reached the master. "
                "Outlined in amber: it had been sent before. Red mark: a worker failed it."
                {first_task}
            </p>
        </section>
    }
}

/// A row per stage of the job (decode, dispatch, ...), on the time axis.
#[component]
fn StageRows(job: Memo<Option<Job>>, axis: Memo<Axis>) -> impl IntoView {
    move || {
        let spans = job.with(|j| j.as_ref().and_then(|j| j.stages.as_ref()).and_then(timeline::stage_spans))?;
        let axis = axis.get();
        Some(
            spans
                .into_iter()
                .map(|(name, start, end)| {
                    let (left, right) = (axis.percent(start), axis.percent(end));
                    let length = format!("{:.2} s", (end - start) as f64 / 1000.0);
                    view! {
                        <span class="row-name">{name} " " <span class="muted">{length}</span></span>
                        <div class="plot stage-row" data-stage=name>
                            <span class="stage" style:left=format!("{left:.2}%") style:width=format!("max({:.2}%, 2px)", right - left)></span>
                        </div>
                    }
                })
                .collect_view(),
        )
    }
}

/// One rate over the job's life (tiles/s or MB/s, as `pick` takes it from
/// each slice of `buckets`): its name and peak, and its chart on the time axis.
#[component]
fn RateRow(
    name: &'static str,
    class: &'static str,
    label: &'static str,
    buckets: Memo<Vec<(f64, f64)>>,
    pick: fn(&(f64, f64)) -> f64,
) -> impl IntoView {
    let points = move || {
        let values: Vec<f64> = buckets.with(|b| b.iter().map(pick).collect());
        let peak = values.iter().copied().fold(f64::MIN_POSITIVE, f64::max);
        let step = 300.0 / values.len().max(1) as f64;
        let mut points = vec!["0,40".to_owned()];
        for (i, v) in values.iter().enumerate() {
            let y = 40.0 - 38.0 * v / peak;
            points.push(format!("{:.1},{y:.1} {:.1},{y:.1}", i as f64 * step, (i + 1) as f64 * step));
        }
        points.push("300,40".to_owned());
        points.join(" ")
    };
    let peak = move || format!("{:.1}", buckets.with(|b| b.iter().map(pick).fold(0.0, f64::max)));
    view! {
        <span class="row-name">{name} <span class="muted small">" peak " {peak}</span></span>
        <div class="plot">
            <svg class=class viewBox="0 0 300 40" preserveAspectRatio="none" role="img" aria-label=label>
                <polygon points=points />
            </svg>
        </div>
    }
}
