//! The upload page: drop or pick an image, watch its job, download the result.

use leptos::prelude::*;

use crate::api::{Job, JobStatus};
use crate::live::Live;
use crate::pages::chain::{ChainEditor, describe};
use crate::pages::{human_bytes, human_duration};
use pipeline::Operation;

#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
enum Phase {
    Idle,
    Uploading(String),
    Submitted(String),
    Refused(String),
}

#[component]
pub fn UploadPage() -> impl IntoView {
    let live = Live::get();
    let phase = RwSignal::new(Phase::Idle);
    let dragging = RwSignal::new(false);
    let chain = RwSignal::new(vec![Operation::default()]);

    let job = Memo::new(move |_| match phase.get() {
        Phase::Submitted(id) => live.jobs.with(|jobs| jobs.get(&id).cloned()),
        _ => None,
    });

    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        #[cfg(feature = "hydrate")]
        if let Some(file) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
            start(file, chain.get_untracked(), phase, live);
        }
    };
    let on_pick = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let input: Option<web_sys::HtmlInputElement> = ev.target().and_then(|t| t.dyn_into().ok());
            if let Some(file) = input.as_ref().and_then(|i| i.files()).and_then(|f| f.get(0)) {
                start(file, chain.get_untracked(), phase, live);
            }
            if let Some(input) = input {
                input.set_value("");
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };

    view! {
        <section class="upload">
            <h1>"Blur a large image, tile by tile"</h1>
            <p class="lede">
                "Drop an image of at least 1024×1024 pixels. The master cuts it into tiles, "
                "workers process them and the result is stitched back without seams."
            </p>
            <ChainEditor chain=chain />
            <label
                id="dropzone"
                class="dropzone"
                class:dragging=move || dragging.get()
                on:dragover=move |ev: leptos::ev::DragEvent| {
                    ev.prevent_default();
                    dragging.set(true);
                }
                on:dragleave=move |_| dragging.set(false)
                on:drop=on_drop
            >
                <input id="file" type="file" accept="image/*" on:change=on_pick />
                <span class="big">"Drop an image here"</span>
                <span class="small">"or click to choose a file (PNG, JPEG, WebP, BMP, TIFF, GIF)"</span>
            </label>
            {move || match phase.get() {
                Phase::Idle => ().into_any(),
                Phase::Uploading(name) => {
                    view! { <p class="status" id="status">"Uploading " {name} "…"</p> }.into_any()
                }
                Phase::Refused(message) => {
                    view! { <p class="error" id="error" role="alert">{message}</p> }.into_any()
                }
                Phase::Submitted(_) => {
                    view! { <JobProgress job=job /> }.into_any()
                }
            }}
        </section>
    }
}

#[cfg(feature = "hydrate")]
fn start(file: web_sys::File, chain: Vec<Operation>, phase: RwSignal<Phase>, live: Live) {
    phase.set(Phase::Uploading(file.name()));
    leptos::task::spawn_local(async move {
        match crate::client::upload(file, &chain).await {
            Ok(job) => {
                let id = job.id.clone();
                live.upsert_job(job);
                phase.set(Phase::Submitted(id.clone()));
                // Catch up on anything that happened before the stream saw it.
                if let Ok(job) = crate::client::get_json::<Job>(&format!("/api/jobs/{id}")).await {
                    live.upsert_job(job);
                }
            }
            Err(message) => phase.set(Phase::Refused(message)),
        }
    });
}

#[component]
fn JobProgress(job: Memo<Option<Job>>) -> impl IntoView {
    let live = Live::get();
    move || {
        let Some(job) = job.get() else {
            return view! { <p class="status">"Waiting for the job…"</p> }.into_any();
        };
        let percent = job.progress();
        let status = job.status;
        let elapsed = job.finished_at.unwrap_or_else(|| live.now.get()) - job.created_at;
        view! {
            <div class="job-card" data-status=status.as_str()>
                <div class="job-head">
                    <strong>{job.filename.clone()}</strong>
                    <span class="muted">
                        {format!("{}×{} · {} · {} tiles", job.width, job.height, human_bytes(job.input_bytes), job.tiles_total)}
                    </span>
                    <span class="muted ops">{job.ops.iter().map(describe).collect::<Vec<_>>().join(" → ")}</span>
                </div>
                <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow=format!("{percent:.0}")>
                    <div class="fill" style:width=format!("{percent:.1}%")></div>
                </div>
                <p class="status" id="status">
                    <span id="percent">{format!("{percent:.0} %")}</span>
                    " · " {status.as_str()} " · " {job.tiles_done} "/" {job.tiles_total} " tiles · "
                    {human_duration(elapsed)}
                </p>
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
