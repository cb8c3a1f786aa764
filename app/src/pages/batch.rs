//! Several images at once: the upload page sends them as one batch, a few at
//! a time, listing each file's progress or refusal; the batch's page
//! (`/batches/{id}`) follows every job live and downloads all results as
//! one zip.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{Batch, Job, JobStatus};
use crate::live::Live;
use crate::pages::human_bytes;

/// Uploads in flight at once: enough to keep the link busy, few enough that
/// each file's bar moves.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const UPLOADS_AT_ONCE: usize = 3;

/// The files of a batch being sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Uploads {
    pub batch: Option<String>,
    pub files: Vec<FileUpload>,
    /// Why the batch could not even be made.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FileUpload {
    pub name: String,
    pub bytes: u64,
    pub state: UploadState,
}

#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub enum UploadState {
    Waiting,
    /// Fraction sent, 0 to 1.
    Sending(f64),
    /// The job's id.
    Accepted(String),
    /// Why, in words.
    Refused(String),
}

impl UploadState {
    fn name(&self) -> &'static str {
        match self {
            UploadState::Waiting => "waiting",
            UploadState::Sending(_) => "sending",
            UploadState::Accepted(_) => "accepted",
            UploadState::Refused(_) => "refused",
        }
    }

    /// Fraction of the file sent (or settled).
    fn sent(&self) -> f64 {
        match self {
            UploadState::Waiting => 0.0,
            UploadState::Sending(f) => *f,
            UploadState::Accepted(_) | UploadState::Refused(_) => 1.0,
        }
    }
}

/// Makes a batch and sends `files` into it, [`UPLOADS_AT_ONCE`] at a time;
/// files the browser can tell are not images are refused without sending.
#[cfg(feature = "hydrate")]
pub fn start(
    files: Vec<web_sys::File>,
    chain: Vec<pipeline::Operation>,
    output: crate::pages::output::OutputChoice,
    uploads: RwSignal<Option<Uploads>>,
    live: Live,
) {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    let listed = files
        .iter()
        .map(|f| FileUpload { name: f.name(), bytes: f.size() as u64, state: UploadState::Waiting })
        .collect();
    uploads.set(Some(Uploads { batch: None, files: listed, error: None }));
    leptos::task::spawn_local(async move {
        let batch = match crate::client::create_batch().await {
            Ok(batch) => batch.id,
            Err(message) => return uploads.update(|u| u.iter_mut().for_each(|u| u.error = Some(message.clone()))),
        };
        uploads.update(|u| u.iter_mut().for_each(|u| u.batch = Some(batch.clone())));
        let queue = Rc::new(RefCell::new(files.into_iter().enumerate().collect::<VecDeque<_>>()));
        let (chain, output, batch) = (Rc::new(chain), Rc::new(output), Rc::new(batch));
        for _ in 0..UPLOADS_AT_ONCE {
            let (queue, chain, output, batch) = (queue.clone(), chain.clone(), output.clone(), batch.clone());
            leptos::task::spawn_local(async move {
                loop {
                    let next = queue.borrow_mut().pop_front();
                    let Some((i, file)) = next else { break };
                    let set = move |state| {
                        uploads.update(|u| {
                            if let Some(f) = u.as_mut().and_then(|u| u.files.get_mut(i)) {
                                f.state = state;
                            }
                        })
                    };
                    let kind = file.type_();
                    if !kind.is_empty() && !kind.starts_with("image/") {
                        set(UploadState::Refused(format!("not an image ({kind})")));
                        continue;
                    }
                    set(UploadState::Sending(0.0));
                    let progress = move |sent: f64, total: f64| {
                        set(UploadState::Sending(if total > 0.0 { sent / total } else { 0.0 }))
                    };
                    match crate::client::upload(file, &chain, (&output.format, output.quality), Some(&batch), progress)
                        .await
                    {
                        Ok(job) => {
                            set(UploadState::Accepted(job.id.clone()));
                            live.upsert_job(job);
                        }
                        Err(message) => set(UploadState::Refused(message)),
                    }
                }
            });
        }
    });
}

/// The files of a batch being sent, each with its state, and the way to the
/// batch's page.
#[component]
pub fn UploadList(uploads: RwSignal<Option<Uploads>>) -> impl IntoView {
    move || {
        uploads.get().map(|u| {
            let total: u64 = u.files.iter().map(|f| f.bytes).sum();
            let sent: f64 = u.files.iter().map(|f| f.bytes as f64 * f.state.sent()).sum();
            let percent = if total > 0 { 100.0 * sent / total as f64 } else { 100.0 };
            let refused = u.files.iter().filter(|f| matches!(f.state, UploadState::Refused(_))).count();
            let rows = u
                .files
                .into_iter()
                .map(|f| {
                    let state = f.state.name();
                    let detail = match &f.state {
                        UploadState::Waiting => "waiting".into_any(),
                        UploadState::Sending(fraction) => format!("sending {:.0}%", fraction * 100.0).into_any(),
                        UploadState::Accepted(id) => {
                            view! { <a href=format!("/jobs/{id}")>"accepted"</a> }.into_any()
                        }
                        UploadState::Refused(why) => view! { <span class="error">"refused: " {why.clone()}</span> }.into_any(),
                    };
                    let name = f.name.clone();
                    view! {
                        <li class="batch-file" data-state=state data-file=name>
                            <span class="name">{f.name}</span>
                            <span class="muted small">{human_bytes(f.bytes)}</span>
                            <span class="state">{detail}</span>
                        </li>
                    }
                })
                .collect_view();
            view! {
                <section class="batch-uploads" id="batch-uploads" aria-label="Files being sent">
                    <div class="bar" role="progressbar" aria-label="Batch upload" aria-valuemin="0" aria-valuemax="100" aria-valuenow=format!("{percent:.0}")>
                        <div class="fill" style:width=format!("{percent:.1}%")></div>
                    </div>
                    <p class="status" aria-live="polite">
                        {format!("{} of {} sent", human_bytes(sent as u64), human_bytes(total))}
                        {(refused > 0).then(|| format!(" · {refused} refused"))}
                    </p>
                    <ul class="batch-files">{rows}</ul>
                    {u.batch.map(|id| view! { <a id="batch-link" class="button" href=format!("/batches/{id}")>"Follow the batch"</a> })}
                    {u.error.map(|e| view! { <p class="error" role="alert">{e}</p> })}
                </section>
            }
        })
    }
}

#[component]
pub fn BatchPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.read().get("id").unwrap_or_default());
    move || view! { <BatchView id=id.get() /> }.into_any()
}

#[component]
fn BatchView(id: String) -> impl IntoView {
    let live = Live::get();
    let missing = RwSignal::new(false);
    // The live snapshot holds only recent jobs: the batch's own come first.
    #[cfg(feature = "hydrate")]
    {
        let id = id.clone();
        leptos::task::spawn_local(async move {
            match crate::client::get_json::<Batch>(&format!("/api/batches/{id}")).await {
                Ok(batch) => batch.jobs.into_iter().for_each(|j| live.upsert_job(j)),
                Err(_) => missing.set(true),
            }
        });
    }
    let jobs = Memo::new({
        let id = id.clone();
        move |_| {
            let mut jobs: Vec<Job> = live
                .jobs
                .with(|all| all.values().filter(|j| j.batch_id.as_deref() == Some(id.as_str())).cloned().collect());
            jobs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            jobs
        }
    });
    let totals = {
        let id = id.clone();
        Memo::new(move |_| Batch::new(id.clone(), 0, jobs.get()))
    };
    let zip = format!("/api/batches/{id}/results.zip");
    view! {
        <section class="batch">
            <h1>"Batch"</h1>
            <Show when=move || missing.get()>
                <p class="error" role="alert">"This batch does not exist (it may have been deleted)."</p>
            </Show>
            <BatchProgress totals />
            <p>
                <a
                    id="batch-zip"
                    class="button"
                    href=zip
                    download=""
                    class:disabled=move || totals.get().images_done == 0
                    aria-disabled=move || (totals.get().images_done == 0).to_string()
                >
                    "Download all results (.zip)"
                </a>
                " "
                <RetryFailed jobs totals />
            </p>
            <BatchJobs jobs />
        </section>
    }
}

/// How far the batch is, in images and in tiles.
#[component]
fn BatchProgress(totals: Memo<Batch>) -> impl IntoView {
    move || {
        let t = totals.get();
        let percent = if t.tiles_total > 0 { 100.0 * t.tiles_done as f64 / t.tiles_total as f64 } else { 0.0 };
        view! {
            <p id="batch-summary" aria-live="polite">
                {format!("{} of {} images done", t.images_done, t.images_total)}
                {(t.images_failed > 0).then(|| format!(", {} failed or cancelled", t.images_failed))}
                {format!(" · {} of {} tiles", t.tiles_done, t.tiles_total)}
            </p>
            <div class="bar" role="progressbar" aria-label="Batch progress" aria-valuemin="0" aria-valuemax="100" aria-valuenow=format!("{percent:.0}")>
                <div class="fill" style:width=format!("{percent:.1}%")></div>
            </div>
        }
    }
}

/// Runs the batch's failed and cancelled jobs again from their stored
/// inputs; shown only when there are some.
#[component]
fn RetryFailed(jobs: Memo<Vec<Job>>, totals: Memo<Batch>) -> impl IntoView {
    #[cfg(feature = "hydrate")]
    let live = Live::get();
    let retry_error = RwSignal::new(None::<String>);
    let retrying = RwSignal::new(false);
    let retry_failed = move |_| {
        let failed: Vec<String> = jobs
            .get_untracked()
            .into_iter()
            .filter(|j| matches!(j.status, JobStatus::Failed | JobStatus::Cancelled))
            .map(|j| j.id)
            .collect();
        retrying.set(true);
        retry_error.set(None);
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            for id in failed {
                match crate::client::retry(&id).await {
                    Ok(job) => {
                        live.jobs.update(|all| drop(all.remove(&id)));
                        live.upsert_job(job);
                    }
                    Err(message) => retry_error.set(Some(message)),
                }
            }
            retrying.set(false);
        });
        #[cfg(not(feature = "hydrate"))]
        let _ = failed;
    };
    view! {
        <Show when=move || { totals.get().images_failed > 0 }>
            <button id="batch-retry" type="button" on:click=retry_failed disabled=move || retrying.get()>
                {move || format!("Run the failed again ({})", totals.get().images_failed)}
            </button>
        </Show>
        {move || retry_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
    }
}

/// The batch's images, each with its status and tiles.
#[component]
fn BatchJobs(jobs: Memo<Vec<Job>>) -> impl IntoView {
    let rows = move || {
        jobs.get()
            .into_iter()
            .map(|j| {
                let status = j.status.as_str();
                let error = j.error.clone().map(|e| format!(": {e}")).unwrap_or_default();
                let cached = j.cached_from.is_some().then_some(" (from the result cache)");
                view! {
                    <tr class="batch-job" data-status=status>
                        <td><a href=format!("/jobs/{}", j.id)>{j.filename.clone()}</a></td>
                        <td class:error=j.status == JobStatus::Failed>{status}{error}{cached}</td>
                        <td>{format!("{}/{}", j.tiles_done, j.tiles_total)}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <table id="batch-jobs">
            <caption class="sr-only">"The batch's images"</caption>
            <thead>
                <tr><th scope="col">"Image"</th><th scope="col">"Status"</th><th scope="col">"Tiles"</th></tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
    }
}
