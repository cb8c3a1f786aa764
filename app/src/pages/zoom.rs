//! A done job's result at full resolution: the master builds a Deep Zoom
//! pyramid of it on request (`GET /api/jobs/{id}/zoom`), and OpenSeadragon,
//! loaded on first use from `/vendor`, shows it: zoom with the wheel, a
//! pinch or the buttons, pan by dragging, keyboard included.

use leptos::prelude::*;

use crate::api::Zoom;

#[derive(Clone, PartialEq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
enum Stage {
    Idle,
    Building(f32),
    Ready(Zoom),
    Failed(String),
}

/// Where OpenSeadragon and its button images are served from (copied from
/// npm by `scripts/setup.sh`).
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const VENDOR: &str = "/vendor/openseadragon";

#[component]
pub fn Explore(id: String) -> impl IntoView {
    let stage = RwSignal::new(Stage::Idle);
    let start = {
        let id = id.clone();
        move |_| {
            stage.set(Stage::Building(0.0));
            #[cfg(feature = "hydrate")]
            leptos::task::spawn_local(follow(id.clone(), stage));
            #[cfg(not(feature = "hydrate"))]
            let _ = &id;
        }
    };
    let body = move || match stage.get() {
        Stage::Idle => view! {
            <button id="explore" class="button secondary" on:click=start.clone()>"Explore at full resolution"</button>
        }
        .into_any(),
        Stage::Building(progress) => view! {
            <p class="status" role="status">
                "Preparing the zoomable view… " {format!("{:.0} %", progress * 100.0)}
            </p>
            <progress max="1" value=progress aria-label="Preparing the zoomable view"></progress>
        }
        .into_any(),
        Stage::Ready(zoom) => view! {
            <Viewer id=id.clone() zoom />
            <button class="button secondary" on:click=move |_| stage.set(Stage::Idle)>"Close the viewer"</button>
        }
        .into_any(),
        Stage::Failed(message) => view! {
            <p class="error" role="alert">{message}</p>
            <button class="button secondary" on:click=start.clone()>"Try again"</button>
        }
        .into_any(),
    };
    view! { <div class="explore">{body}</div> }
}

/// Asks for the pyramid until it is built, showing how far it has come.
#[cfg(feature = "hydrate")]
async fn follow(id: String, stage: RwSignal<Stage>) {
    loop {
        match crate::client::get_json::<Zoom>(&format!("/api/jobs/{id}/zoom")).await {
            Ok(Zoom::Building { progress }) => stage.set(Stage::Building(progress)),
            Ok(ready) => return stage.set(Stage::Ready(ready)),
            Err(message) => return stage.set(Stage::Failed(message)),
        }
        sleep(400).await;
    }
}

#[cfg(feature = "hydrate")]
async fn sleep(ms: u64) {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    set_timeout(
        move || {
            let _ = tx.send(());
        },
        std::time::Duration::from_millis(ms),
    );
    let _ = rx.await;
}

#[component]
fn Viewer(id: String, zoom: Zoom) -> impl IntoView {
    let Zoom::Ready { width, height, .. } = zoom else {
        return ().into_any();
    };
    let failed = RwSignal::new(None::<String>);
    #[cfg(feature = "hydrate")]
    {
        let viewer = StoredValue::new_local(None::<osd::Viewer>);
        Effect::new(move |_| {
            let (id, zoom) = (id.clone(), zoom.clone());
            leptos::task::spawn_local(async move {
                match osd::show(&id, &zoom).await {
                    Ok(opened) => viewer.set_value(Some(opened)),
                    Err(message) => failed.set(Some(message)),
                }
            });
        });
        on_cleanup(move || {
            if let Some(opened) = viewer.try_update_value(Option::take).flatten() {
                opened.destroy();
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = id;
    view! {
        <div
            id="zoom-viewer"
            class="zoom-viewer"
            style=format!("aspect-ratio: {width} / {height}")
            role="application"
            aria-label=format!("The result at full resolution, {width}×{height}: scroll or pinch to zoom, drag to pan")
        ></div>
        {move || failed.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
    }
    .into_any()
}

#[cfg(feature = "hydrate")]
mod osd {
    use std::cell::Cell;

    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;

    use super::VENDOR;
    use crate::api::Zoom;

    #[wasm_bindgen]
    extern "C" {
        pub type Viewer;

        #[wasm_bindgen(js_name = OpenSeadragon, catch)]
        fn open(options: &JsValue) -> Result<Viewer, JsValue>;

        #[wasm_bindgen(method)]
        pub fn destroy(this: &Viewer);

        #[wasm_bindgen(js_namespace = JSON, catch)]
        fn parse(text: &str) -> Result<JsValue, JsValue>;
    }

    thread_local! {
        static LOADED: Cell<bool> = const { Cell::new(false) };
    }

    /// Opens the viewer on `#zoom-viewer` over job `id`'s pyramid.
    pub async fn show(id: &str, zoom: &Zoom) -> Result<Viewer, String> {
        let Zoom::Ready { width, height, tile_size, overlap, format } = zoom else {
            return Err("the pyramid is not ready".into());
        };
        load_script(&format!("{VENDOR}/openseadragon.min.js")).await?;
        let mut options = serde_json::json!({
            "id": "zoom-viewer",
            "prefixUrl": format!("{VENDOR}/images/"),
            "drawer": "canvas",
            "showNavigator": true,
            "navigatorPosition": "BOTTOM_RIGHT",
            "maxZoomPixelRatio": 4,
            "visibilityRatio": 0.5,
            "tileSources": {
                "Image": {
                    "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
                    "Url": format!("/api/jobs/{id}/zoom/"),
                    "Format": format,
                    "TileSize": tile_size,
                    "Overlap": overlap,
                    "Size": { "Width": width, "Height": height },
                }
            },
        });
        // Tiles are images: with a token, they are fetched with its header.
        if let Some(token) = crate::client::token() {
            options["loadTilesWithAjax"] = true.into();
            options["ajaxHeaders"] = serde_json::json!({ "Authorization": format!("Bearer {token}") });
        }
        let options = parse(&options.to_string()).map_err(|_| "the viewer's options are malformed".to_owned())?;
        open(&options).map_err(|e| format!("the viewer could not start: {e:?}"))
    }

    /// Adds `<script src>` to the page once, and waits until it has run.
    async fn load_script(src: &str) -> Result<(), String> {
        if LOADED.get() {
            return Ok(());
        }
        let failed = || "the zoom viewer could not be loaded".to_owned();
        let document = web_sys::window().and_then(|w| w.document()).ok_or_else(failed)?;
        let script = document.create_element("script").map_err(|_| failed())?;
        script.set_attribute("src", src).map_err(|_| failed())?;
        let (tx, rx) = futures::channel::oneshot::channel::<bool>();
        let tx = std::rc::Rc::new(Cell::new(Some(tx)));
        let listen = |event: &str, ok: bool| {
            let tx = std::rc::Rc::clone(&tx);
            let callback = Closure::once_into_js(move || {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(ok);
                }
            });
            script.add_event_listener_with_callback(event, callback.unchecked_ref())
        };
        listen("load", true).map_err(|_| failed())?;
        listen("error", false).map_err(|_| failed())?;
        document.head().ok_or_else(failed)?.append_child(&script).map_err(|_| failed())?;
        match rx.await {
            Ok(true) => {
                LOADED.set(true);
                Ok(())
            }
            _ => {
                script.remove();
                Err(failed())
            }
        }
    }
}
