//! Browser-side I/O: HTTP calls and the event stream. Compiled for wasm only.

use gloo_net::http::{Request, Response};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::api::{ApiError, Event, Job, Worker};
use crate::live::Live;

/// Connects the live view: an EventSource for the lifetime of the page (the
/// browser reconnects it by itself), a fresh snapshot on every (re)connect so
/// nothing missed while offline stays missing, and a one-second clock.
pub fn connect(live: Live) {
    let Ok(source) = web_sys::EventSource::new("/api/events") else {
        return;
    };
    for name in ["job", "worker", "tile", "job_deleted"] {
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

pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, String> {
    let response = Request::get(url).send().await.map_err(|e| e.to_string())?;
    parse(response).await
}

/// Uploads an image as a new job.
pub async fn upload(file: web_sys::File, ops: &[pipeline::Operation]) -> Result<Job, String> {
    let form = web_sys::FormData::new().map_err(|_| "the browser cannot build a form".to_owned())?;
    let ops = serde_json::to_string(ops).map_err(|e| e.to_string())?;
    form.append_with_str("ops", &ops).map_err(|_| "the browser cannot build a form".to_owned())?;
    form.append_with_blob_and_filename("image", &file, &file.name())
        .map_err(|_| "the browser cannot read the file".to_owned())?;
    let response = Request::post("/api/jobs")
        .body(form)
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| format!("the upload failed: {e}"))?;
    parse(response).await
}

/// Cancels a running job.
pub async fn cancel(id: &str) -> Result<Job, String> {
    let response = Request::post(&format!("/api/jobs/{id}/cancel")).send().await.map_err(|e| e.to_string())?;
    parse(response).await
}

/// Deletes a finished job.
pub async fn delete(id: &str) -> Result<(), String> {
    let response = Request::delete(&format!("/api/jobs/{id}")).send().await.map_err(|e| e.to_string())?;
    if response.ok() {
        return Ok(());
    }
    parse::<()>(response).await
}

/// The body as `T`, or the server's error message in words.
async fn parse<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, String> {
    if response.ok() {
        return response.json::<T>().await.map_err(|e| e.to_string());
    }
    match response.json::<ApiError>().await {
        Ok(e) => Err(e.message),
        Err(_) => Err(format!("the server answered {} {}", response.status(), response.status_text())),
    }
}
