//! The dashboard: every worker and job, live.

use leptos::prelude::*;

use crate::api::{JobStatus, WorkerStatus};
use crate::live::Live;
use crate::pages::stream::{Colour, TaskStream, Ticks};
use crate::pages::{human_bytes, human_duration};
use crate::timeline::{self, Axis, Bar, Failure};

#[component]
pub fn Dashboard() -> impl IntoView {
    view! {
        <section class="dashboard">
            <h1>"Dashboard"</h1>
            <SystemPanel />
            <RecentStream />
            <h2>"Workers"</h2>
            <WorkersTable />
            <h2>"Jobs"</h2>
            <JobsTable />
        </section>
    }
}

/// Every worker, by id: its state, what it does and what it costs; and a
/// warning when more are alive than can get tasks.
#[component]
fn WorkersTable() -> impl IntoView {
    let live = Live::get();
    let workers = move || {
        let mut list: Vec<_> = live.workers.with(|w| w.values().cloned().collect());
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    };
    // The tasks topic's partitions do not change while the server runs.
    let partitions = RwSignal::new(None::<u64>);
    #[cfg(feature = "hydrate")]
    leptos::task::spawn_local(async move {
        if let Ok(stats) = crate::client::get_json::<crate::api::Stats>("/api/stats").await {
            partitions.set(Some(stats.task_partitions));
        }
    });
    let idle = move || {
        let alive = live.workers.with(|w| w.values().filter(|w| w.status == WorkerStatus::Alive).count() as u64);
        partitions.get().and_then(|p| idle_workers(alive, p))
    };
    view! {
        {move || idle().map(|warning| view! { <p class="hint" id="idle-workers" role="status">{warning}</p> })}
        <table id="workers">
            <caption class="sr-only">"Workers, updated live"</caption>
            <thead>
                <tr>
                    <th scope="col">"Worker"</th><th scope="col">"Host"</th><th scope="col">"Status"</th>
                    <th scope="col">"Last heartbeat"</th><th scope="col">"Current tile"</th>
                    <th scope="col">"Tiles done"</th><th scope="col">"Tiles/s"</th>
                    <th scope="col">"CPU"</th><th scope="col">"Memory"</th>
                </tr>
            </thead>
            <tbody>
                {move || {
                    let list = workers();
                    if list.is_empty() {
                        return view! { <tr><td colspan="9" class="empty">"No worker has reported yet."</td></tr> }.into_any();
                    }
                    list.into_iter().map(|w| view! { <WorkerRow w /> }).collect_view().into_any()
                }}
            </tbody>
        </table>
    }
}

/// Why some of the `alive` workers get no tasks, if the tasks topic has
/// fewer `partitions` than that.
fn idle_workers(alive: u64, partitions: u64) -> Option<String> {
    let idle = alive.checked_sub(partitions).filter(|&n| n > 0)?;
    let (workers, get) = if idle == 1 { ("worker", "gets") } else { ("workers", "get") };
    Some(format!(
        "{alive} workers are alive, but the tasks topic has {partitions} partition{}, each read by one \
         worker: {idle} {workers} {get} no tasks. A new topic prefix for the server and the workers, with \
         more partitions (TILEPIPE_TOPIC_PREFIX, TILEPIPE_TASK_PARTITIONS), puts them all to work.",
        if partitions == 1 { "" } else { "s" }
    ))
}

#[component]
fn WorkerRow(w: crate::api::Worker) -> impl IntoView {
    let live = Live::get();
    let status = match w.status {
        WorkerStatus::Alive => "alive",
        WorkerStatus::Lost => "lost",
    };
    let last_seen = w.last_seen;
    let heard = move || match live.now.get() {
        0 => "—".to_owned(),
        now => format!("{} ago", human_duration((now - last_seen).max(0))),
    };
    let id = w.id.clone();
    let (cpu, rss) = (w.cpu_percent, w.rss_bytes);
    let cpu_line = usage_line(live, w.id.clone(), |(c, _)| f64::from(c), 100.0);
    let rss_line = usage_line(live, w.id.clone(), |(_, r)| r as f64, 1.0);
    let per_second = move || {
        let now = live.now.get() / 1000;
        let since = live.watching_since.get();
        live.worker_throughput.with(|t| t.get(&id).map_or(0.0, |c| crate::live::rate(c, now, since)))
    };
    view! {
        <tr class="worker" data-status=status>
            <td class="mono">
                <span class="swatch" style:background-color=format!("hsl({} 65% 52%)", crate::pages::tiles::worker_hue(&w.id))></span>
                {w.id}
            </td>
            <td>
                {w.host}
                {w.runtime.map(|r| view! { <span class="muted small runtime">{r}</span> })}
            </td>
            <td><span class=format!("pill {status}")>{status}</span></td>
            <td>{heard}</td>
            <td class="mono">{match (w.status, w.current_tile) {
                // What it last said it was doing is stale once it is lost.
                (WorkerStatus::Lost, _) => "—".to_owned(),
                (WorkerStatus::Alive, tile) => tile.unwrap_or_else(|| "idle".into()),
            }}</td>
            <td>{w.tiles_done}</td>
            <td class="rate">{move || format!("{:.1}", per_second())}</td>
            <td class="usage cpu">
                {cpu.map_or("—".to_owned(), |c| format!("{c:.0}%"))}
                <svg class="spark mini" viewBox="0 0 60 16" preserveAspectRatio="none" aria-hidden="true">
                    <polyline points=cpu_line fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke" />
                </svg>
            </td>
            <td class="usage rss">
                {rss.map_or("—".to_owned(), human_bytes)}
                <svg class="spark mini" viewBox="0 0 60 16" preserveAspectRatio="none" aria-hidden="true">
                    <polyline points=rss_line fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke" />
                </svg>
            </td>
        </tr>
    }
}

/// Every job, newest first, with cancel or delete; a failed action says why.
#[component]
fn JobsTable() -> impl IntoView {
    let live = Live::get();
    // The last action's error, in words.
    let problem = RwSignal::new(None::<String>);
    let jobs = move || {
        let mut list: Vec<_> = live.jobs.with(|j| j.values().cloned().collect());
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        list
    };
    view! {
        {move || problem.get().map(|p| view! { <p class="error" role="alert">{p}</p> })}
        <table id="jobs">
            <caption class="sr-only">"Jobs, newest first, updated live"</caption>
            <thead>
                <tr>
                    <th scope="col">"Image"</th><th scope="col">"Size"</th><th scope="col">"Operations"</th>
                    <th scope="col">"Status"</th><th scope="col">"Progress"</th><th scope="col">"Duration"</th>
                    <th scope="col"><span class="sr-only">"Actions"</span></th>
                </tr>
            </thead>
            <tbody>
                {move || {
                    let list = jobs();
                    if list.is_empty() {
                        return view! { <tr><td colspan="7" class="empty">"No jobs yet."</td></tr> }.into_any();
                    }
                    list.into_iter().map(|j| view! { <JobRow j problem /> }).collect_view().into_any()
                }}
            </tbody>
        </table>
    }
}

#[component]
fn JobRow(j: crate::api::Job, problem: RwSignal<Option<String>>) -> impl IntoView {
    let live = Live::get();
    let percent = j.progress();
    let (created_at, finished_at) = (j.created_at, j.finished_at);
    let duration = move || match finished_at.unwrap_or_else(|| live.now.get()) {
        end if end > 0 => human_duration(end - created_at),
        _ => "—".into(),
    };
    let done = j.status == JobStatus::Done;
    let finished = j.status.is_finished();
    let id = j.id.clone();
    let act = move |_| {
        let id = id.clone();
        problem.set(None);
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            let outcome = if finished {
                crate::client::delete(&id).await
            } else {
                crate::client::cancel(&id).await.map(|job| live.upsert_job(job))
            };
            if let Err(message) = outcome {
                problem.set(Some(message));
            }
        });
        #[cfg(not(feature = "hydrate"))]
        let _ = id;
    };
    view! {
        <tr class="job" data-status=j.status.as_str()>
            <td>
                <a href=format!("/jobs/{}", j.id)>{j.filename.clone()}</a>
                {done.then(|| view! {
                    " " <a class="muted small-link" href=format!("/api/jobs/{}/result", j.id) download>"download"</a>
                })}
            </td>
            <td>{format!("{}×{} · {}", j.width, j.height, human_bytes(j.input_bytes))}</td>
            <td class="ops">{j.ops.iter().map(crate::pages::chain::describe).collect::<Vec<_>>().join(" → ")}</td>
            <td><span class=format!("pill {}", j.status.as_str())>{j.status.as_str()}</span></td>
            <td>
                <div class="bar small" role="progressbar" aria-label=format!("Progress of {}", j.filename)
                    aria-valuemin="0" aria-valuemax="100" aria-valuenow=format!("{percent:.0}")>
                    <div class="fill" style:width=format!("{percent:.1}%")></div>
                </div>
                {format!("{}/{}", j.tiles_done, j.tiles_total)}
            </td>
            <td>{duration}</td>
            <td>
                <button type="button" class="small" on:click=act
                    aria-label=format!("{} {}", if finished { "Delete" } else { "Cancel" }, j.filename)>
                    {if finished { "Delete" } else { "Cancel" }}
                </button>
            </td>
        </tr>
    }
}

/// How far back the dashboard's task stream looks.
const STREAM_WINDOW_MS: i64 = 120_000;

/// The task stream of every job over the last minutes, a bar per tile in its
/// job's colour, a lane per worker (alive ones even when idle).
#[component]
fn RecentStream() -> impl IntoView {
    let live = Live::get();
    let axis = Memo::new(move |_| {
        let now = live.master_now();
        Axis { start: now - STREAM_WINDOW_MS, end: now }
    });
    // Tiles done before the page opened, of the jobs that ran lately (each
    // job's once), so a reload keeps the picture.
    let stored = RwSignal::new(Vec::<Bar>::new());
    #[cfg(feature = "hydrate")]
    {
        let asked = StoredValue::new(std::collections::HashSet::<String>::new());
        Effect::new(move || {
            let since = live.master_now() - STREAM_WINDOW_MS;
            let recent: Vec<String> = live.jobs.with(|jobs| {
                jobs.values()
                    .filter(|j| j.cached_from.is_none() && j.finished_at.is_none_or(|f| f >= since))
                    .map(|j| j.id.clone())
                    .collect()
            });
            for id in recent {
                if asked.try_update_value(|asked| asked.insert(id.clone())) != Some(true) {
                    continue;
                }
                leptos::task::spawn_local(async move {
                    let url = format!("/api/jobs/{id}/tiles");
                    if let Ok(tiles) = crate::client::get_json::<Vec<crate::api::Tile>>(&url).await {
                        stored.update(|bars| bars.extend(tiles.iter().filter_map(|t| Bar::from_tile(&id, t))));
                    }
                });
            }
        });
    }
    let bars = Memo::new(move |_| {
        let since = axis.get().start;
        let mut bars: Vec<Bar> = live
            .tiles
            .with(|tiles| tiles.values().flatten().filter(|t| t.done_at >= since).map(Bar::from_event).collect());
        let seen: std::collections::HashSet<(&str, u32)> = bars.iter().map(|b| (b.job.as_str(), b.tile)).collect();
        let earlier: Vec<Bar> = stored.with(|stored| {
            stored.iter().filter(|b| b.end >= since && !seen.contains(&(b.job.as_str(), b.tile))).cloned().collect()
        });
        bars.extend(earlier);
        bars
    });
    let failures = Memo::new(move |_| {
        let since = axis.get().start;
        live.failures.with(|f| f.values().flatten().filter(|f| f.at >= since).map(Failure::from).collect::<Vec<_>>())
    });
    let lanes = Memo::new(move |_| {
        let alive: Vec<String> = live
            .workers
            .with(|w| w.values().filter(|w| w.status == WorkerStatus::Alive).map(|w| w.id.clone()).collect());
        bars.with(|b| failures.with(|f| timeline::lanes(b, f, alive.iter().map(String::as_str))))
    });
    view! {
        <h2>"Task stream" <span class="muted small">" · the last two minutes, coloured by job"</span></h2>
        <div class="timeline compact" id="dashboard-stream">
            <TaskStream bars failures lanes axis colour=Colour::ByJob ticks=Ticks::Ago lane_height=14.0 />
        </div>
    }
}

/// A worker's recent CPU or memory as sparkline points (see [`sparkline`]).
fn usage_line(live: Live, id: String, pick: fn((f32, u64)) -> f64, floor: f64) -> impl Fn() -> String {
    move || {
        let values: Vec<f64> =
            live.worker_usage.with(|u| u.get(&id).map(|s| s.iter().map(|&v| pick(v)).collect()).unwrap_or_default());
        sparkline(&values, floor)
    }
}

/// SVG polyline points for `values` across a 60x16 box, scaled to their
/// peak (at least `floor`), newest on the right.
fn sparkline(values: &[f64], floor: f64) -> String {
    let peak = values.iter().copied().fold(floor, f64::max);
    let step = 60.0 / (crate::live::USAGE_SAMPLES - 1) as f64;
    let start = crate::live::USAGE_SAMPLES.saturating_sub(values.len());
    values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", (start + i) as f64 * step, 15.0 - 14.0 * v / peak))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Throughput over the last minutes, the backlog and the totals.
#[component]
fn SystemPanel() -> impl IntoView {
    let live = Live::get();
    const BUCKET_SECS: i64 = 5;
    let buckets = move || {
        let now = live.now.get() / 1000;
        let n = (crate::live::THROUGHPUT_WINDOW_SECS / BUCKET_SECS) as usize;
        let mut rates = vec![0.0; n];
        live.throughput.with(|t| {
            for (second, count) in t {
                let age = now - second;
                if (0..crate::live::THROUGHPUT_WINDOW_SECS).contains(&age) {
                    rates[n - 1 - (age / BUCKET_SECS) as usize] += f64::from(*count) / BUCKET_SECS as f64;
                }
            }
        });
        rates
    };
    let current =
        move || live.throughput.with(|t| crate::live::rate(t, live.now.get() / 1000, live.watching_since.get()));
    let chart = move || {
        let rates = buckets();
        let peak = rates.iter().copied().fold(1.0, f64::max);
        let step = 300.0 / (rates.len().max(2) - 1) as f64;
        rates
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{:.1},{:.1}", i as f64 * step, 38.0 - 36.0 * r / peak))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let totals = move || {
        live.jobs.with(|jobs| {
            let backlog: u32 =
                jobs.values().filter(|j| !j.status.is_finished()).map(|j| j.tiles_total - j.tiles_done).sum();
            let running = jobs.values().filter(|j| !j.status.is_finished()).count();
            let done = jobs.values().filter(|j| j.status == JobStatus::Done).count();
            let failed = jobs.values().filter(|j| j.status == JobStatus::Failed).count();
            let tiles: u32 = jobs.values().map(|j| j.tiles_done).sum();
            (backlog, running, done, failed, tiles)
        })
    };
    view! {
        <div class="system" id="system">
            <div class="stat">
                <span class="label">"Tiles/s"</span>
                <span class="value" id="tiles-per-second">{move || format!("{:.1}", current())}</span>
                <svg class="spark" viewBox="0 0 300 40" preserveAspectRatio="none" role="img" aria-label="Tiles per second over the last five minutes">
                    <polyline points=chart fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke" />
                </svg>
            </div>
            {move || {
                let (backlog, running, done, failed, tiles) = totals();
                view! {
                    <div class="stat"><span class="label">"Backlog"</span><span class="value" id="backlog">{backlog}</span><span class="muted small">"tiles waiting"</span></div>
                    <div class="stat"><span class="label">"Jobs"</span><span class="value">{running}</span><span class="muted small">{format!("running · {done} done · {failed} failed")}</span></div>
                    <div class="stat"><span class="label">"Tiles done"</span><span class="value">{tiles}</span><span class="muted small">"in listed jobs"</span></div>
                }
            }}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::idle_workers;

    #[test]
    fn warns_only_when_more_workers_are_alive_than_partitions() {
        assert_eq!(idle_workers(0, 4), None);
        assert_eq!(idle_workers(4, 4), None);
        let one = idle_workers(5, 4).expect("one worker idle");
        assert!(one.contains("5 workers are alive") && one.contains("4 partitions"), "{one}");
        assert!(one.contains("1 worker gets no tasks"), "{one}");
        let three = idle_workers(4, 1).expect("three workers idle");
        assert!(three.contains("1 partition,") && three.contains("3 workers get no tasks"), "{three}");
    }
}
