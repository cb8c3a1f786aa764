//! The upload page: choose the operations, drop or pick an image; the job's
//! own page (`/jobs/{id}`) takes over once it is accepted.

use leptos::prelude::*;

use crate::pages::chain::ChainEditor;
use crate::pages::human_bytes;
use pipeline::Operation;

#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
enum Phase {
    Idle,
    /// File name, bytes sent, bytes in all.
    Uploading(String, f64, f64),
    Refused(String),
}

#[component]
pub fn UploadPage() -> impl IntoView {
    #[cfg(feature = "hydrate")]
    let live = crate::live::Live::get();
    let phase = RwSignal::new(Phase::Idle);
    let dragging = RwSignal::new(false);
    let chain = RwSignal::new(vec![Operation::default()]);

    #[cfg(feature = "hydrate")]
    let navigate = leptos_router::hooks::use_navigate();
    #[cfg(feature = "hydrate")]
    let start = move |file: web_sys::File| start(file, chain.get_untracked(), phase, live, navigate.clone());
    #[cfg(feature = "hydrate")]
    let start_picked = start.clone();

    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        #[cfg(feature = "hydrate")]
        if let Some(file) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
            start(file);
        }
    };
    let on_pick = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let input: Option<web_sys::HtmlInputElement> = ev.target().and_then(|t| t.dyn_into().ok());
            if let Some(file) = input.as_ref().and_then(|i| i.files()).and_then(|f| f.get(0)) {
                start_picked(file);
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
                Phase::Uploading(name, sent, total) => {
                    let percent = if total > 0.0 { 100.0 * sent / total } else { 0.0 };
                    view! {
                        <div class="uploading">
                            <div class="bar" role="progressbar" aria-label="Upload" aria-valuemin="0" aria-valuemax="100" aria-valuenow=format!("{percent:.0}")>
                                <div class="fill" style:width=format!("{percent:.1}%")></div>
                            </div>
                            <p class="status" id="status">
                                {if sent < total { "Uploading " } else { "Checking and decoding " }} {name} " · "
                                <span id="upload-bytes">{format!("{} of {}", human_bytes(sent as u64), human_bytes(total as u64))}</span>
                            </p>
                        </div>
                    }.into_any()
                }
                Phase::Refused(message) => {
                    view! { <p class="error" id="error" role="alert">{message}</p> }.into_any()
                }
            }}
        </section>
    }
}

#[cfg(feature = "hydrate")]
fn start(
    file: web_sys::File,
    chain: Vec<Operation>,
    phase: RwSignal<Phase>,
    live: crate::live::Live,
    navigate: impl Fn(&str, leptos_router::NavigateOptions) + 'static,
) {
    let name = file.name();
    phase.set(Phase::Uploading(name.clone(), 0.0, file.size()));
    let progress = move |sent, total| phase.set(Phase::Uploading(name.clone(), sent, total));
    leptos::task::spawn_local(async move {
        match crate::client::upload(file, &chain, progress).await {
            Ok(job) => {
                let path = format!("/jobs/{}", job.id);
                live.upsert_job(job);
                navigate(&path, Default::default());
            }
            Err(message) => phase.set(Phase::Refused(message)),
        }
    });
}
