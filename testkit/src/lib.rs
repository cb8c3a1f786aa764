//! Test harness: a real nisshi broker per test, a real server on a free port
//! with its own SQLite file, and real workers, all on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use app::api::{Job, JobStatus, Tile};
use pipeline::Operation;
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

pub use conformance::broker::{free_port, wait_for_port};

/// A nisshi broker with SQLite storage in a temporary directory (the
/// conformance kit's), with this harness's logging set up.
pub struct Broker(conformance::Broker);

/// Logs of the code under test, at `RUST_LOG` (default warn), captured per test.
fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

impl Broker {
    pub fn start() -> Self {
        init_tracing();
        Broker(conformance::Broker::start())
    }

    /// CPU time the broker has used so far, user and system (Linux).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.0.pid())
    }
}

impl std::ops::Deref for Broker {
    type Target = conformance::Broker;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Broker {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// User plus system CPU time of a process, from `/proc`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    worker::usage::cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A tilepipe binary (server or worker) running as its own process, so a
/// test can kill it for real.
pub struct Process {
    child: Child,
    name: String,
}

impl Process {
    pub fn spawn(binary: &Path, name: &str, env: &[(&str, String)]) -> Self {
        Self::spawn_with_args(binary, &[], name, env)
    }

    pub fn spawn_with_args(binary: &Path, args: &[&Path], name: &str, env: &[(&str, String)]) -> Self {
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Self { child, name: name.to_owned() }
    }

    /// The most resident memory the process has used so far (Linux: VmHWM).
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    /// The resident memory it uses now (Linux: VmRSS).
    pub fn memory_bytes(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    fn status_bytes(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb = status.lines().find_map(|l| l.strip_prefix(field))?.trim().strip_suffix("kB")?.trim();
        kb.parse::<u64>().ok().map(|kb| kb * 1024)
    }

    /// CPU time the process has used so far, user and system (Linux).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.child.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL: no cleanup, no goodbye to the broker.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to exit; returns its status.
    pub async fn terminate(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        eventually(&format!("{} to exit after SIGTERM", self.name), deadline, || {
            std::future::ready(self.child.try_wait().unwrap())
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Cargo put this build's binaries (beside the running executable, or
/// one level up from a test's `deps/`).
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") { dir.parent().unwrap() } else { dir };
    dir.join(name)
}

/// The server binary as a process on a free port, with `data` as its data directory.
pub fn server_process(
    binary: &Path,
    broker: &Broker,
    prefix: &str,
    data: &Path,
    env: &[(&str, String)],
) -> (Process, Api) {
    let port = free_port();
    let mut all = vec![
        ("TILEPIPE_ADDR", format!("127.0.0.1:{port}")),
        ("TILEPIPE_DATA_DIR", data.display().to_string()),
        ("TILEPIPE_BROKERS", broker.addr.clone()),
        ("TILEPIPE_TOPIC_PREFIX", prefix.to_owned()),
        ("TILEPIPE_TASK_PARTITIONS", "4".to_owned()),
    ];
    all.extend(env.iter().cloned());
    let process = Process::spawn(binary, "server", &all);
    wait_for_port(port, "the server");
    (process, Api { base: format!("http://127.0.0.1:{port}") })
}

/// The worker binary as a process.
pub fn worker_process(binary: &Path, broker: &Broker, prefix: &str, id: &str) -> Process {
    Process::spawn(binary, id, &worker_env(broker, prefix, id))
}

/// The Python reference worker (examples/python-worker) as a process, run
/// by the venv scripts/setup.sh makes.
pub fn python_worker_process(broker: &Broker, prefix: &str, id: &str) -> Process {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join("tools/venv/bin/python");
    let script = root.join("examples/python-worker/worker.py");
    Process::spawn_with_args(&python, &[&script], id, &worker_env(broker, prefix, id))
}

fn worker_env(broker: &Broker, prefix: &str, id: &str) -> [(&'static str, String); 5] {
    [
        ("TILEPIPE_BROKERS", broker.addr.clone()),
        ("TILEPIPE_TOPIC_PREFIX", prefix.to_owned()),
        ("TILEPIPE_WORKER_ID", id.to_owned()),
        ("TILEPIPE_HEARTBEAT_SECS", "1".to_owned()),
        ("TILEPIPE_SESSION_TIMEOUT_MS", "6000".to_owned()),
    ]
}

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
        self.restart_with(broker, |_| {}).await
    }

    /// Stops this server and starts a new one on the same data directory,
    /// whose config `tweak` may change first.
    pub async fn restart_with(self, broker: &Broker, tweak: impl FnOnce(&mut server::Config)) -> Self {
        let (data, prefix) = (self.data, self.prefix);
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        Self::start_in(data, broker, &prefix, tweak).await
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

    pub fn api(&self) -> Api {
        Api { base: self.base.clone() }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }

    pub async fn job(&self, id: &str) -> Job {
        self.api().job(id).await
    }

    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.api().upload(name, bytes).await
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
    let mut noise = pipeline::noise::Xorshift64::new(0x9E37_79B9_7F4A_7C15);
    let mut pixels = Vec::with_capacity(pipeline::Frame::byte_len(width, height));
    for y in 0..height {
        for x in 0..width {
            let grain = (noise.next_u64() >> 56) as u32;
            pixels.push(((x * 255 / width + grain) / 2) as u8);
            pixels.push(((y * 255 / height + grain) / 2) as u8);
            pixels.push((((x ^ y) & 0xff) + grain) as u8 / 2);
        }
    }
    pipeline::Frame::new(width, height, pixels)
}

/// A PNG that declares `width` x `height` and holds no pixels: a decompression
/// bomb's calling card, under a hundred bytes long.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    png_header_with(width, height, &[])
}

/// A PNG header as [`png_header_only`] with `chunks` (kind, data) between
/// the IHDR and the IDAT.
pub fn png_header_with(width: u32, height: u32, chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    for (kind, data) in chunks {
        chunk(&mut out, kind, data);
    }
    // An IDAT holding an empty zlib stream: decoders read up to here for the header.
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An iCCP chunk's data: a profile of `size` zero bytes, deflated (a few
/// hundred KB for hundreds of MB).
pub fn icc_profile(size: usize) -> Vec<u8> {
    // Streamed, so that making a bomb does not cost what it would.
    let mut deflate = fdeflate::Compressor::new(b"bomb\0\0".to_vec()).unwrap();
    let zeros = vec![0; 1 << 20];
    for start in (0..size).step_by(zeros.len()) {
        deflate.write_data(&zeros[..zeros.len().min(size - start)]).unwrap();
    }
    deflate.finish().unwrap()
}

pub fn png(frame: &pipeline::Frame) -> Vec<u8> {
    pipeline::codec::encode_png(frame)
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
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let response = reqwest::get(server.url("/api/events")).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    tokio::spawn(async move {
        let mut stream = response.bytes_stream().eventsource();
        let mut events = Vec::new();
        while let Some(message) = stream.next().await {
            let event: app::api::Event = serde_json::from_str(&message.unwrap().data).unwrap();
            let last = stop(&event);
            events.push(event);
            if last {
                break;
            }
        }
        events
    })
}

/// A member of the workers' group that is not a tilepipe worker: `reply`
/// decides what message, if any, goes back for each task (a faulty worker,
/// a black hole). Like a real worker it commits a task after its reply is sent.
pub struct FakeWorker {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    /// Tasks received so far.
    pub seen: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl FakeWorker {
    pub fn start(
        broker: &Broker,
        prefix: &str,
        reply: impl Fn(pipeline::wire::Task) -> Option<Vec<u8>> + Send + 'static,
    ) -> Self {
        use rdkafka::Message;
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use std::sync::atomic::Ordering;

        let topics = pipeline::wire::Topics::new(prefix);
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("group.id", &topics.workers_group)
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "200")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("fetch.message.max.bytes", pipeline::wire::MAX_MESSAGE_BYTES.to_string())
            .create()
            .unwrap();
        consumer.subscribe(&[&topics.tasks]).unwrap();
        let producer = producer(broker);
        let shutdown = CancellationToken::new();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (stop, count) = (shutdown.clone(), std::sync::Arc::clone(&seen));
        let handle = tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = consumer.recv() => m.unwrap(),
                };
                count.fetch_add(1, Ordering::SeqCst);
                let task = pipeline::wire::Task::decode(message.payload().unwrap()).unwrap();
                if let Some(payload) = reply(task) {
                    send(&producer, &topics.results, &payload).await;
                }
                consumer.store_offset_from_message(&message).unwrap();
            }
            tokio::task::spawn_blocking(move || drop(consumer)).await.unwrap();
        });
        Self { shutdown, handle, seen }
    }

    /// Commits what it took and leaves the group.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }
}

/// The message a real worker would answer `task` with, or a failure saying
/// `error`: for [`FakeWorker`]s that fail some tasks and process the rest.
/// Results go raw, as a worker in another language may send them.
pub fn answer(task: pipeline::wire::Task, worker_id: &str, error: Option<&str>) -> Vec<u8> {
    use pipeline::wire::{ResultHeader, TileFailure, TileResult};
    let h = task.header;
    if let Some(error) = error {
        let (job_id, tile, attempt) = (h.job_id, h.tile, h.attempt);
        let worker_id = worker_id.into();
        return TileFailure { job_id, tile, worker_id, error: error.into(), attempt, unsupported: None }.encode();
    }
    let output = pipeline::ops::process_tile(&h.ops, task.input, h.halo);
    let header = ResultHeader {
        job_id: h.job_id,
        tile: h.tile,
        rect: h.rect,
        worker_id: worker_id.into(),
        elapsed_ms: 1.0,
        channels: output.channels,
        encoding: pipeline::codec::Encoding::Raw,
    };
    TileResult { header, output }.encode()
}

/// Members of a group once it is stable (nisshi's group descriptions carry
/// neither client ids nor assignments: a count is what there is).
pub async fn stable_group_members(broker: &Broker, group: String) -> usize {
    let brokers = broker.addr.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        let Ok(list) = consumer.fetch_group_list(Some(&group), Duration::from_secs(5)) else { return 0 };
        list.groups().iter().filter(|g| g.state() == "Stable").map(|g| g.members().len()).sum()
    })
    .await
    .unwrap()
}

pub fn producer(broker: &Broker) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("message.max.bytes", pipeline::wire::MAX_MESSAGE_BYTES.to_string())
        .create()
        .unwrap()
}

pub async fn send(producer: &rdkafka::producer::FutureProducer, topic: &str, payload: &[u8]) {
    let record = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
}

/// Reads a topic from the start until `enough` says the messages seen so far
/// suffice, or fails after `deadline`.
pub async fn read_topic(
    broker: &Broker,
    topic: &str,
    deadline: Duration,
    enough: impl Fn(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", pipeline::wire::MAX_MESSAGE_BYTES.to_string())
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut messages = Vec::new();
    let read = async {
        while !enough(&messages) {
            messages.push(consumer.recv().await.unwrap().detach());
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| panic!("timed out reading {topic}: {} messages", messages.len()));
    tokio::task::spawn_blocking(move || drop(consumer)).await.unwrap();
    messages
}

/// How many messages `topic` holds, over all its partitions (from their
/// watermarks): read that many with [`read_topic`] to read it to its end.
pub async fn topic_length(broker: &Broker, topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().unwrap();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        const TIMEOUT: Duration = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT).unwrap();
        let partitions = metadata.topics().iter().find(|t| t.name() == topic).unwrap().partitions().len();
        (0..partitions as i32)
            .map(|p| {
                let (low, high) = consumer.fetch_watermarks(&topic, p, TIMEOUT).unwrap();
                usize::try_from(high - low).unwrap()
            })
            .sum()
    })
    .await
    .unwrap()
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
