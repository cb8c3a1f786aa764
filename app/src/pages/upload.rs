//! The upload page: choose the operations, drop or pick an image; the job's
//! own page (`/jobs/{id}`) takes over once it is accepted. Several images at
//! once go as a batch (see [`crate::pages::batch`]).

use leptos::prelude::*;

use crate::pages::batch::{UploadList, Uploads};
use crate::pages::chain::ChainEditor;
use crate::pages::human_bytes;
use crate::pages::output::{OutputChoice, OutputPicker};
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
    let phase = RwSignal::new(Phase::Idle);
    let dragging = RwSignal::new(false);
    let chain = RwSignal::new(vec![Operation::default()]);
    let output = RwSignal::new(OutputChoice::default());

    let preview = RwSignal::new(None::<Preview>);
    let uploads = RwSignal::new(None::<Uploads>);
    // A folder picker: the attribute has no typed setter in Leptos.
    let folder = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = folder.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    let limits = RwSignal::new(None::<crate::api::Limits>);

    #[cfg(feature = "hydrate")]
    let start = file_intake(Choices { chain, output }, phase, preview, uploads, limits);
    #[cfg(feature = "hydrate")]
    let start_picked = start.clone();
    #[cfg(feature = "hydrate")]
    take_pasted(start.clone());
    #[cfg(not(feature = "hydrate"))]
    let _ = limits;

    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        #[cfg(feature = "hydrate")]
        if let Some(files) = ev.data_transfer().and_then(|d| d.files()) {
            start(files);
        }
    };
    let on_pick = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let input: Option<web_sys::HtmlInputElement> = ev.target().and_then(|t| t.dyn_into().ok());
            if let Some(files) = input.as_ref().and_then(|i| i.files()) {
                start_picked(files);
            }
            if let Some(input) = input {
                input.set_value("");
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };

    // Copy on the server, where it holds no browser code; Clone in the browser.
    #[allow(clippy::clone_on_copy)]
    let on_pick_folder = on_pick.clone();

    view! {
        <section class="upload">
            <h1>"Blur a large image, tile by tile"</h1>
            <p class="lede">
                "Drop an image of at least 1024×1024 pixels, or several at once. The master cuts each into "
                "tiles, workers process them and the result is stitched back without seams."
            </p>
            // Type-erased: the page's view type is otherwise too deep for rustc.
            {view! {
                <div class="settings">
                    <ChainEditor chain=chain />
                    <OutputPicker choice=output />
                </div>
            }
                .into_any()}
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
                <input id="file" type="file" accept="image/*" multiple aria-label="Choose images to process" on:change=on_pick />
                <span class="big">"Drop images here"</span>
                <span class="small">"or click to choose files, or paste one (PNG, JPEG, WebP, BMP, TIFF, GIF); several go as one batch"</span>
            </label>
            <p class="folder-pick">
                <label class="button secondary">
                    <input id="folder" type="file" multiple node_ref=folder aria-label="Choose a folder of images to process" on:change=on_pick_folder />
                    "Or send a whole folder"
                </label>
            </p>
            <PreviewFigure preview />
            <UploadStatus phase />
            <UploadList uploads=uploads />
        </section>
    }
}

/// The chosen file as the browser shows it, with its size and weight.
#[component]
fn PreviewFigure(preview: RwSignal<Option<Preview>>) -> impl IntoView {
    move || {
        preview.get().map(|p| {
            view! {
                <figure class="preview" id="preview">
                    <img src=p.url alt=format!("Preview of {}", p.name) />
                    <figcaption class="muted small">
                        {p.name} " · "
                        {p.size.map(|(w, h)| format!("{w}×{h} · ")).unwrap_or_default()}
                        {human_bytes(p.bytes)}
                    </figcaption>
                </figure>
            }
        })
    }
}

/// The upload's progress (bytes sent, then the master's check), or why it
/// was refused.
#[component]
fn UploadStatus(phase: RwSignal<Phase>) -> impl IntoView {
    move || match phase.get() {
        Phase::Idle => ().into_any(),
        Phase::Uploading(name, sent, total) => {
            let percent = if total > 0.0 { 100.0 * sent / total } else { 0.0 };
            view! {
                <div class="uploading">
                    <div class="bar" role="progressbar" aria-label="Upload" aria-valuemin="0" aria-valuemax="100" aria-valuenow=format!("{percent:.0}")>
                        <div class="fill" style:width=format!("{percent:.1}%")></div>
                    </div>
                    <p class="status" id="status">
                        {if sent < total {
                            "Uploading "
                        } else if is_jpeg(&name) {
                            // The master never decodes a JPEG: it cuts the tiles from its scan.
                            "Checking and cutting into tiles "
                        } else {
                            "Checking and decoding "
                        }} {name} " · "
                        <span id="upload-bytes">{format!("{} of {}", human_bytes(sent as u64), human_bytes(total as u64))}</span>
                    </p>
                </div>
            }.into_any()
        }
        Phase::Refused(message) => view! { <p class="error" id="error" role="alert">{message}</p> }.into_any(),
    }
}

/// What the page's settings ask of an upload.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
struct Choices {
    chain: RwSignal<Vec<Operation>>,
    output: RwSignal<OutputChoice>,
}

/// What becomes of chosen files: one is checked against the server's limits
/// (fetched now) and uploaded as a job, several go as a batch.
#[cfg(feature = "hydrate")]
fn file_intake(
    choices: Choices,
    phase: RwSignal<Phase>,
    preview: RwSignal<Option<Preview>>,
    uploads: RwSignal<Option<Uploads>>,
    limits: RwSignal<Option<crate::api::Limits>>,
) -> impl Fn(web_sys::FileList) + Clone + 'static {
    let live = crate::live::Live::get();
    let Choices { chain, output } = choices;
    let navigate = leptos_router::hooks::use_navigate();
    let upload = std::rc::Rc::new(move |file: web_sys::File| {
        start(file, chain.get_untracked(), output.get_untracked(), phase, live, navigate.clone())
    });
    // What the server accepts, so a file is checked before it is sent.
    leptos::task::spawn_local(async move {
        if let Ok(l) = crate::client::get_json::<crate::api::Limits>("/api/limits").await {
            limits.set(Some(l));
        }
    });
    let one =
        move |file: web_sys::File| check_then_upload(file, limits.get_untracked(), preview, phase, upload.clone());
    move |files: web_sys::FileList| {
        let files: Vec<web_sys::File> = (0..files.length()).filter_map(|i| files.get(i)).collect();
        match files.len() {
            0 => {}
            1 => one(files.into_iter().next().expect("one file")),
            _ => {
                preview.set(None);
                phase.set(Phase::Idle);
                crate::pages::batch::start(files, chain.get_untracked(), output.get_untracked(), uploads, live);
            }
        }
    }
}

/// Takes an image pasted from the clipboard anywhere on the page, while it is shown.
#[cfg(feature = "hydrate")]
fn take_pasted(start: impl Fn(web_sys::FileList) + 'static) {
    let handle = window_event_listener(leptos::ev::paste, move |ev: web_sys::ClipboardEvent| {
        if let Some(files) = ev.clipboard_data().and_then(|d| d.files()).filter(|f| f.length() > 0) {
            ev.prevent_default();
            start(files);
        }
    });
    on_cleanup(move || handle.remove());
}

/// The chosen file, as the browser sees it.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
struct Preview {
    url: String,
    name: String,
    /// Width and height, if the browser can show the format (not TIFF).
    size: Option<(u32, u32)>,
    bytes: u64,
}

/// Checks type, byte size and dimensions against the server's limits and
/// shows a preview; uploads only what would be accepted. Formats the browser
/// cannot show (TIFF) are left to the server to judge.
#[cfg(feature = "hydrate")]
fn check_then_upload(
    file: web_sys::File,
    limits: Option<crate::api::Limits>,
    preview: RwSignal<Option<Preview>>,
    phase: RwSignal<Phase>,
    upload: std::rc::Rc<dyn Fn(web_sys::File)>,
) {
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;

    let (name, kind, bytes) = (file.name(), file.type_(), file.size() as u64);
    if !kind.is_empty() && !kind.starts_with("image/") {
        return phase.set(Phase::Refused(format!("{name} is not an image ({kind})")));
    }
    if let Some(max) = limits.map(|l| l.max_upload_bytes).filter(|&max| bytes > max) {
        let (size, max) = (human_bytes(bytes), human_bytes(max));
        return phase.set(Phase::Refused(format!("{name} is {size}; at most {max} can be uploaded")));
    }
    if let Some(old) = preview.get_untracked() {
        let _ = web_sys::Url::revoke_object_url(&old.url);
    }
    let (Ok(url), Ok(image)) = (web_sys::Url::create_object_url_with_blob(&file), web_sys::HtmlImageElement::new())
    else {
        return upload(file);
    };
    let (shown, src) = (image.clone(), url.clone());
    let (file_ok, upload_ok, url_ok, name_ok) = (file.clone(), upload.clone(), url.clone(), name.clone());
    let on_load = Closure::once_into_js(move || {
        let size = (shown.natural_width(), shown.natural_height());
        preview.set(Some(Preview { url: url_ok, name: name_ok, size: Some(size), bytes }));
        match limits.and_then(|l| l.size.check(size.0, size.1).err()).map(|r| r.message().to_owned()) {
            Some(reason) => phase.set(Phase::Refused(reason)),
            None => upload_ok(file_ok),
        }
    });
    let on_error = Closure::once_into_js(move || {
        preview.set(Some(Preview { url, name, size: None, bytes }));
        upload(file);
    });
    image.set_onload(Some(on_load.unchecked_ref()));
    image.set_onerror(Some(on_error.unchecked_ref()));
    image.set_src(&src);
}

#[cfg(feature = "hydrate")]
fn start(
    file: web_sys::File,
    chain: Vec<Operation>,
    output: OutputChoice,
    phase: RwSignal<Phase>,
    live: crate::live::Live,
    navigate: impl Fn(&str, leptos_router::NavigateOptions) + 'static,
) {
    let name = file.name();
    phase.set(Phase::Uploading(name.clone(), 0.0, file.size()));
    let progress = move |sent, total| phase.set(Phase::Uploading(name.clone(), sent, total));
    leptos::task::spawn_local(async move {
        match crate::client::upload(file, &chain, (&output.format, output.quality), None, progress).await {
            Ok(job) => {
                let path = format!("/jobs/{}", job.id);
                live.upsert_job(job);
                navigate(&path, Default::default());
            }
            Err(message) => phase.set(Phase::Refused(message)),
        }
    });
}

/// Whether a file name says JPEG.
fn is_jpeg(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.ends_with(".jpg") || name.ends_with(".jpeg")
}
