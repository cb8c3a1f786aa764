//! The JSON API and the event stream of a running server, as a client.

use std::time::Duration;

use app::api::{Event, Job, JobStatus, Tile};
use pipeline::Operation;

use crate::{TestServer, eventually, png};

/// The JSON API of a running server.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`, answered as it was.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(self.url(path)).await.unwrap()
    }

    pub async fn job(&self, id: &str) -> Job {
        self.get(&format!("/api/jobs/{id}")).await.json().await.unwrap()
    }

    pub async fn tiles(&self, id: &str) -> Vec<Tile> {
        self.get(&format!("/api/jobs/{id}/tiles")).await.json().await.unwrap()
    }

    /// Uploads `bytes` as a file named `name`; returns the raw response.
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
        let form = reqwest::multipart::Form::new().part("image", part);
        reqwest::Client::new().post(self.url("/api/jobs")).multipart(form).send().await.unwrap()
    }

    /// Submits `image` with the chain `ops`; the job must be accepted.
    pub async fn submit(&self, image: &pipeline::Frame, ops: &[Operation]) -> Job {
        self.submit_with("test.png", png(image), &[("ops", &serde_json::to_string(ops).unwrap())]).await
    }

    /// Submits the file `bytes` named `name` with the form's other `fields`
    /// (`ops`, `format`, `quality`); the job must be accepted.
    /// An upload with more form fields, answered as it was.
    pub async fn upload_with(&self, name: &str, bytes: Vec<u8>, fields: &[(&str, &str)]) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
        let form = fields.iter().fold(reqwest::multipart::Form::new().part("image", part), |form, (k, v)| {
            form.text(k.to_string(), v.to_string())
        });
        reqwest::Client::new().post(self.url("/api/jobs")).multipart(form).send().await.unwrap()
    }

    pub async fn submit_with(&self, name: &str, bytes: Vec<u8>, fields: &[(&str, &str)]) -> Job {
        let response = self.upload_with(name, bytes, fields).await;
        assert_eq!(response.status(), 201, "upload refused: {}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// The server's live events (`GET /api/events`), from the moment this
    /// returns: events that come while the caller does something else wait
    /// in the stream.
    pub async fn events(&self) -> impl futures::Stream<Item = Event> + Unpin + Send + 'static {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let response = self.get("/api/events").await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        response.bytes_stream().eventsource().map(|message| serde_json::from_str(&message.unwrap().data).unwrap())
    }

    /// Waits for the job to finish (done, failed or cancelled).
    pub async fn finished(&self, id: &str, deadline: Duration) -> Job {
        eventually("the job to finish", deadline, || async {
            let job = self.job(id).await;
            job.status.is_finished().then_some(job)
        })
        .await
    }

    /// Waits until the job has at least `tiles` tiles done.
    pub async fn progressed(&self, id: &str, tiles: u32, deadline: Duration) -> Job {
        eventually(&format!("{tiles} tiles done"), deadline, || async {
            let job = self.job(id).await;
            (job.tiles_done >= tiles).then_some(job)
        })
        .await
    }

    /// The result image's RGB pixels.
    pub async fn result(&self, id: &str) -> image::RgbImage {
        let response = reqwest::get(self.url(&format!("/api/jobs/{id}/result"))).await.unwrap();
        assert_eq!(response.status(), 200);
        image::load_from_memory(&response.bytes().await.unwrap()).unwrap().into_rgb8()
    }

    /// Asserts the job is done and its result equals `ops` applied to the
    /// whole of `image`, bit for bit.
    pub async fn assert_exact(&self, job: &Job, image: &pipeline::Frame, ops: &[Operation]) {
        assert_eq!(job.status, JobStatus::Done, "job did not succeed: {:?}", job.error);
        assert_eq!(job.tiles_done, job.tiles_total);
        let result = self.result(&job.id).await;
        let expected = pipeline::ops::process_whole(ops, image);
        assert_eq!(result.dimensions(), (image.width, image.height));
        assert!(result.as_raw() == &expected.pixels, "the result differs from the whole-image result");
    }
}

/// Reads `GET /api/events` in the background until `stop` says an event is
/// the last one wanted; returns every event seen. The subscription is live
/// when this returns.
pub async fn record_events(
    server: &TestServer,
    stop: impl Fn(&app::api::Event) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Vec<app::api::Event>> {
    use futures::StreamExt;
    let mut stream = server.api().events().await;
    tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            let last = stop(&event);
            events.push(event);
            if last {
                break;
            }
        }
        events
    })
}

/// Starts a multipart upload declaring `declared` bytes and sends its first
/// `sent` (a file part: `start`, then zeros), reading the answer while still sending, as
/// a browser does: returns the status and body the server answered with,
/// even if it answered before the upload was complete.
pub async fn partial_upload(base: &str, declared: u64, start: &[u8], sent: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let addr = base.strip_prefix("http://").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let boundary = "tilepipe-test-boundary";
    let head = format!(
        "POST /api/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {declared}\r\n\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
         filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n"
    );
    let start = start.to_vec();
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&start).await;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = sent.saturating_sub(start.len());
        while left > 0 {
            let n = left.min(chunk.len());
            if writer.write_all(&chunk[..n]).await.is_err() {
                break; // the server stopped reading: expected once it has answered
            }
            left -= n;
        }
        writer // keep the connection open until the answer is read
    });
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = reader.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok());
                if length.is_some_and(|len| response.len() >= end + 4 + len) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("no answer to a partial upload");
    sending.abort();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
