//! A job's page: live progress, its chain, and the result when done. Its URL
//! is the job's, so a reload (or a link from the dashboard) shows the same
//! live state.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::JobStatus;
use crate::live::Live;
use crate::pages::chain::describe;
use crate::pages::tiles::TileMap;
use crate::pages::{human_bytes, human_duration};

#[component]
pub fn JobPage() -> impl IntoView {
    let live = Live::get();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let job = Memo::new(move |_| live.jobs.with(|jobs| jobs.get(&id()).cloned()));
    // The snapshot holds only recent jobs: fetch this one in any case.
    let missing = RwSignal::new(false);
    Effect::new(move || {
        let id = id();
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            match crate::client::get_json::<crate::api::Job>(&format!("/api/jobs/{id}")).await {
                Ok(job) => live.upsert_job(job),
                Err(_) => missing.set(true),
            }
        });
        #[cfg(not(feature = "hydrate"))]
        let _ = (id, missing);
    });

    // The map is built once per job, not on every progress event; a job
    // answered from the cache processed no tile, so it has none.
    let grid = Memo::new(move |_| {
        job.with(|j| {
            j.as_ref().filter(|j| j.cached_from.is_none()).map(|j| (j.id.clone(), j.width, j.height, j.tile_size))
        })
    });
    let tile_map =
        move || grid.get().map(|(id, width, height, tile_size)| view! { <TileMap id width height tile_size /> });
    // So is the before/after view, once the job is done.
    let done =
        Memo::new(move |_| job.with(|j| j.as_ref().filter(|j| j.status == JobStatus::Done).map(|j| j.id.clone())));
    let compare = move || done.get().map(|id| view! { <BeforeAfter id /> });

    let card = move || {
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
        let stages = job.stages.map(|s| {
            let secs = |ms: f64| format!("{:.2} s", ms / 1000.0);
            format!(
                "decode {} · dispatch {} · processing {} · encode {}",
                secs(s.decode_ms),
                secs(s.dispatch_ms),
                secs(s.process_ms),
                secs(s.encode_ms)
            )
        });
        view! {
            <section class="job">
                <h1>{job.filename.clone()}</h1>
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
                    {stages.map(|text| view! { <p class="muted small" id="stages">{text}</p> })}
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
            </section>
        }
        .into_any()
    };
    view! {
        {card}
        {tile_map}
        {compare}
        <p><a href="/">"Process another image"</a></p>
    }
}

/// The original and the result on top of each other, split by a slider.
#[component]
fn BeforeAfter(id: String) -> impl IntoView {
    let split = RwSignal::new(50.0);
    view! {
        <figure class="compare" style=move || format!("--split: {}%", split.get())>
            <img class="before" src=format!("/api/jobs/{id}/input") alt="The original" loading="lazy" />
            <img class="after" src=format!("/api/jobs/{id}/result") alt="The result" loading="lazy" />
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
