//! The server's JSON API and event stream, as the command line uses them.
//! Every refusal becomes an error carrying the server's own code and words.

use std::path::Path;

use anyhow::Context;
use app::api::{ApiError, Batch, Event, Job, Worker};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::{RequestBuilder, Response, multipart};
use tokio::io::AsyncWriteExt;

/// A refusal by the server: its code (`unsupported_format`) and message.
#[derive(Debug)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Refusal {}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Client { base, token: token.filter(|t| !t.is_empty()), http: reqwest::Client::new() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request; a non-2xx answer becomes a [`Refusal`].
    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ApiError>(&body) {
            Ok(e) => Refusal { code: e.error, message: e.message },
            Err(_) => Refusal { code: format!("http_{status}"), message: body.chars().take(200).collect() },
        }
        .into())
    }

    pub async fn jobs(&self) -> anyhow::Result<Vec<Job>> {
        Ok(self.send(self.request(reqwest::Method::GET, "/api/jobs")).await?.json().await?)
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<Job> {
        Ok(self.send(self.request(reqwest::Method::GET, &format!("/api/jobs/{id}"))).await?.json().await?)
    }

    pub async fn workers(&self) -> anyhow::Result<Vec<Worker>> {
        Ok(self.send(self.request(reqwest::Method::GET, "/api/workers")).await?.json().await?)
    }

    pub async fn create_batch(&self) -> anyhow::Result<Batch> {
        Ok(self.send(self.request(reqwest::Method::POST, "/api/batches")).await?.json().await?)
    }

    pub async fn cancel(&self, id: &str) -> anyhow::Result<Job> {
        Ok(self.send(self.request(reqwest::Method::POST, &format!("/api/jobs/{id}/cancel"))).await?.json().await?)
    }

    /// Uploads `path` as a new job with the form `fields`, calling `sent`
    /// with the bytes sent so far as the body streams out.
    pub async fn submit(
        &self,
        path: &Path,
        fields: &[(&'static str, String)],
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> anyhow::Result<Job> {
        let file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
        let length = file.metadata().await?.len();
        let mut total = 0u64;
        let body = tokio_util::io::ReaderStream::new(file).inspect_ok(move |chunk| {
            total += chunk.len() as u64;
            sent(total);
        });
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let part = multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), length).file_name(name);
        let mut form = multipart::Form::new().part("image", part);
        for (key, value) in fields {
            form = form.text(*key, value.clone());
        }
        Ok(self.send(self.request(reqwest::Method::POST, "/api/jobs").multipart(form)).await?.json().await?)
    }

    /// Streams a finished job's result to `to` (through a `.part` file, so a
    /// file under its final name is always whole); returns its size.
    pub async fn download(&self, id: &str, to: &Path) -> anyhow::Result<u64> {
        let response = self.send(self.request(reqwest::Method::GET, &format!("/api/jobs/{id}/result"))).await?;
        let partial = to.with_extension(format!(
            "{}.part",
            to.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default()
        ));
        let mut file =
            tokio::fs::File::create(&partial).await.with_context(|| format!("creating {}", partial.display()))?;
        let mut bytes = response.bytes_stream();
        let mut size = 0u64;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.context("downloading the result")?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        drop(file);
        tokio::fs::rename(&partial, to).await.with_context(|| format!("writing {}", to.display()))?;
        Ok(size)
    }

    /// The server's live events, until the connection ends.
    pub async fn events(&self) -> anyhow::Result<impl Stream<Item = Event> + use<>> {
        let response = self.send(self.request(reqwest::Method::GET, "/api/events")).await?;
        Ok(response
            .bytes_stream()
            .eventsource()
            .take_while(|e| std::future::ready(e.is_ok()))
            .filter_map(|e| std::future::ready(e.ok().and_then(|e| serde_json::from_str::<Event>(&e.data).ok()))))
    }
}
