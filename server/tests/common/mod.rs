//! Test harness: a real nisshi broker per test, a real server on a free port
//! with its own SQLite file, and real workers, all on loopback.

#![allow(dead_code)] // each test binary uses a different part of it

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use app::api::Job;
use tokio_util::sync::CancellationToken;

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A nisshi broker with SQLite storage in a temporary directory.
pub struct Broker {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("nisshi")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://broker.db", "--group-initial-rebalance-delay", "300ms"])
            .arg("--silent")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("nisshi must be on PATH (scripts/setup.sh installs it)");
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "nisshi did not start listening on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr, _dir: dir }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server running in this process on a free port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub data: tempfile::TempDir,
    pub prefix: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(broker: &Broker, prefix: &str) -> Self {
        Self::start_with(broker, prefix, |_| {}).await
    }

    /// Starts a server whose config `tweak` may change first.
    pub async fn start_with(broker: &Broker, prefix: &str, tweak: impl FnOnce(&mut server::Config)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), broker, prefix, tweak).await
    }

    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(self, broker: &Broker) -> Self {
        let (data, prefix) = (self.data, self.prefix);
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        Self::start_in(data, broker, &prefix, |_| {}).await
    }

    async fn start_in(
        data: tempfile::TempDir,
        broker: &Broker,
        prefix: &str,
        tweak: impl FnOnce(&mut server::Config),
    ) -> Self {
        let mut config = server::Config::defaults();
        config.addr = "127.0.0.1:0".parse().unwrap();
        config.data_dir = data.path().to_owned();
        config.brokers = broker.addr.clone();
        config.topic_prefix = prefix.to_owned();
        config.task_partitions = 4;
        tweak(&mut config);
        let options = server::leptos_options(config.addr).unwrap();
        let server = server::Server::start(config, options).await.expect("server starts");
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let handle = tokio::spawn(server.serve(async move { signal.cancelled().await }));
        Self { addr, base: format!("http://{addr}"), data, prefix: prefix.to_owned(), shutdown, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }

    pub async fn job(&self, id: &str) -> Job {
        reqwest::get(self.url(&format!("/api/jobs/{id}"))).await.unwrap().json().await.unwrap()
    }

    /// Uploads `bytes` as a file named `name`; returns the raw response.
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
        let form = reqwest::multipart::Form::new().part("image", part);
        reqwest::Client::new().post(self.url("/api/jobs")).multipart(form).send().await.unwrap()
    }
}

/// A worker running in this process.
pub struct TestWorker {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestWorker {
    pub fn start(broker: &Broker, prefix: &str, id: &str) -> Self {
        let config = worker::Config {
            brokers: broker.addr.clone(),
            topic_prefix: prefix.to_owned(),
            worker_id: Some(id.to_owned()),
            heartbeat_secs: 1,
            session_timeout_ms: 6_000,
        };
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker::run(config, shutdown.clone()));
        Self { shutdown, handle }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// A deterministic test image with structure at every scale (gradients plus
/// noise), so any misplaced or missing tile changes the blurred output.
pub fn test_image(width: u32, height: u32) -> pipeline::Frame {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut pixels = Vec::with_capacity(pipeline::Frame::byte_len(width, height));
    for y in 0..height {
        for x in 0..width {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 56) as u32;
            pixels.push(((x * 255 / width + noise) / 2) as u8);
            pixels.push(((y * 255 / height + noise) / 2) as u8);
            pixels.push((((x ^ y) & 0xff) + noise) as u8 / 2);
        }
    }
    pipeline::Frame::new(width, height, pixels)
}

/// A PNG that declares `width` x `height` and holds no pixels: a decompression
/// bomb's calling card, under a hundred bytes long.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    // An IDAT holding an empty zlib stream: decoders read up to here for the header.
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

pub fn png(frame: &pipeline::Frame) -> Vec<u8> {
    server::intake::encode_png(frame).unwrap()
}

/// A topic prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}-", uuid::Uuid::new_v4().simple())
}

/// Reads `GET /api/events` in the background until `stop` says an event is
/// the last one wanted; returns every event seen. The subscription is live
/// when this returns.
pub async fn record_events(
    server: &TestServer,
    stop: impl Fn(&app::api::Event) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Vec<app::api::Event>> {
    let mut response = reqwest::get(server.url("/api/events")).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    tokio::spawn(async move {
        let (mut buffer, mut events) = (String::new(), Vec::new());
        while let Some(chunk) = response.chunk().await.unwrap() {
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else { continue };
                let event: app::api::Event = serde_json::from_str(data.trim()).unwrap();
                let last = stop(&event);
                events.push(event);
                if last {
                    return events;
                }
            }
        }
        events
    })
}
