//! Browser-side HTTP calls, with the session's access token. Compiled for
//! wasm only; the event stream is [`crate::live`]'s.

use gloo_net::http::{Request, RequestBuilder, Response};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::api::{ApiError, Batch, Job};

pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, String> {
    let had_token = token().is_some();
    let response = send(|| Request::get(url), None).await?;
    if !had_token && token().is_some() && response.ok() {
        // Reads needed the token just given: reconnect the event stream with it.
        let _ = window().location().reload();
    }
    parse(response).await
}

const TOKEN_KEY: &str = "tilepipe-token";

/// The access token given earlier in this browser session, if any.
pub fn token() -> Option<String> {
    window().session_storage().ok()??.get_item(TOKEN_KEY).ok()?
}

/// Asks for the server's access token and keeps it for the session; false
/// if none was given.
fn ask_token(why: &str) -> bool {
    let question = format!("{why}\n\nAccess token for this tilepipe server:");
    let Ok(Some(token)) = window().prompt_with_message(&question) else {
        return false;
    };
    let token = token.trim();
    if token.is_empty() {
        return false;
    }
    window().session_storage().ok().flatten().is_some_and(|s| s.set_item(TOKEN_KEY, token).is_ok())
}

/// Sends a request with the session's token; on `401` asks for a token once
/// and sends it again.
async fn send(make: impl Fn() -> RequestBuilder, form: Option<&web_sys::FormData>) -> Result<Response, String> {
    let mut asked = false;
    loop {
        let mut builder = make();
        if let Some(token) = token() {
            builder = builder.header("Authorization", &format!("Bearer {token}"));
        }
        let request = match form {
            Some(form) => builder.body(form.clone()),
            None => builder.build(),
        }
        .map_err(|e| e.to_string())?;
        let response = request.send().await.map_err(|e| format!("the server cannot be reached: {e}"))?;
        if response.status() != 401 || asked {
            return Ok(response);
        }
        asked = true;
        let why = response.json::<ApiError>().await.map(|e| e.message).unwrap_or_default();
        if !ask_token(&why) {
            return Err(why);
        }
    }
}

/// Uploads an image as a new job, reporting bytes sent as they go (fetch
/// cannot report upload progress; XMLHttpRequest can).
pub async fn upload(
    file: web_sys::File,
    ops: &[pipeline::Operation],
    (format, quality): (&str, u8),
    batch: Option<&str>,
    progress: impl Fn(f64, f64) + 'static,
) -> Result<Job, String> {
    let form = web_sys::FormData::new().map_err(|_| "the browser cannot build a form".to_owned())?;
    let ops = serde_json::to_string(ops).map_err(|e| e.to_string())?;
    let mut fields = vec![("ops", ops), ("format", format.to_owned()), ("quality", quality.to_string())];
    fields.extend(batch.map(|id| ("batch", id.to_owned())));
    for (name, value) in fields {
        form.append_with_str(name, &value).map_err(|_| "the browser cannot build a form".to_owned())?;
    }
    form.append_with_blob_and_filename("image", &file, &file.name())
        .map_err(|_| "the browser cannot read the file".to_owned())?;
    let progress = std::rc::Rc::new(progress);
    let mut asked = false;
    loop {
        let (status, body) = post_form("/api/jobs", &form, progress.clone()).await?;
        if status == 401 && !asked {
            asked = true;
            let why = serde_json::from_str::<ApiError>(&body).map(|e| e.message).unwrap_or_default();
            if !ask_token(&why) {
                return Err(why);
            }
            continue;
        }
        if (200..300).contains(&status) {
            return serde_json::from_str(&body).map_err(|e| e.to_string());
        }
        return Err(serde_json::from_str::<ApiError>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("the server answered {status}")));
    }
}

/// POSTs a form with XMLHttpRequest; the status and body once it is answered.
async fn post_form(
    url: &str,
    form: &web_sys::FormData,
    progress: std::rc::Rc<dyn Fn(f64, f64)>,
) -> Result<(u16, String), String> {
    let failed = |_| "the browser cannot send the upload".to_owned();
    let xhr = web_sys::XmlHttpRequest::new().map_err(failed)?;
    xhr.open("POST", url).map_err(failed)?;
    if let Some(token) = token() {
        xhr.set_request_header("Authorization", &format!("Bearer {token}")).map_err(failed)?;
    }
    let on_progress = Closure::<dyn FnMut(web_sys::ProgressEvent)>::new(move |e: web_sys::ProgressEvent| {
        if e.length_computable() {
            progress(e.loaded(), e.total());
        }
    });
    xhr.upload().map_err(failed)?.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
    let (done, answered) = futures::channel::oneshot::channel::<bool>();
    let done = std::rc::Rc::new(std::cell::RefCell::new(Some(done)));
    let finish = |ok: bool| {
        let done = done.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Some(tx) = done.borrow_mut().take() {
                let _ = tx.send(ok);
            }
        })
    };
    let (on_load, on_error) = (finish(true), finish(false));
    xhr.set_onload(Some(on_load.as_ref().unchecked_ref()));
    xhr.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    xhr.send_with_opt_form_data(Some(form)).map_err(failed)?;
    // The closures live until the request is answered.
    let ok = answered.await.unwrap_or(false);
    drop((on_progress, on_load, on_error));
    if !ok {
        return Err("the upload failed: the server cannot be reached".to_owned());
    }
    Ok((xhr.status().unwrap_or(0), xhr.response_text().ok().flatten().unwrap_or_default()))
}

/// A new batch, for several uploads.
pub async fn create_batch() -> Result<Batch, String> {
    let response = send(|| Request::post("/api/batches"), None).await?;
    parse(response).await
}

/// Runs a failed or cancelled job again; the new job (the old one is deleted).
pub async fn retry(id: &str) -> Result<Job, String> {
    let response = send(|| Request::post(&format!("/api/jobs/{id}/retry")), None).await?;
    parse(response).await
}

/// Cancels a running job.
pub async fn cancel(id: &str) -> Result<Job, String> {
    let response = send(|| Request::post(&format!("/api/jobs/{id}/cancel")), None).await?;
    parse(response).await
}

/// Deletes a finished job.
pub async fn delete(id: &str) -> Result<(), String> {
    let response = send(|| Request::delete(&format!("/api/jobs/{id}")), None).await?;
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
