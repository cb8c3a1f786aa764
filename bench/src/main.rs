//! The whole pipeline, measured: a real broker, the release server and N
//! release workers process a generated JPEG, against a single process doing
//! the same decode, blur and encode with the same crates on all cores.
//!
//! `scripts/bench.sh` builds the binaries and runs this; see `--help`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use app::api::{Event, Job, Stages, Worker, WorkerStatus};
use clap::Parser;
use futures::StreamExt;
use pipeline::{Frame, Operation, TileGrid, ops};
use server::intake::{self, Limits};
use testkit::{Broker, Process, binary, eventually, server_process, unique_prefix, worker_process};

#[derive(Parser)]
#[command(name = "tilepipe-bench", about = "tilepipe's whole-pipeline benchmark")]
struct Args {
    /// Edge of the square test image, in pixels.
    #[arg(long, default_value_t = 8192)]
    size: u32,
    /// Worker counts to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2")]
    workers: Vec<usize>,
    /// Tile sizes to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "512")]
    tile_sizes: Vec<u32>,
    /// Gaussian blurs (51x51) in the chain: 3 makes the work compute-bound,
    /// to see the workers scale (the OpenCV baseline runs only for 1).
    #[arg(long, default_value_t = 1)]
    blurs: usize,
    /// Skip the single-process and OpenCV baselines (for gigapixel images,
    /// which they would hold whole in memory several times over).
    #[arg(long)]
    no_baselines: bool,
    /// Also upload this many copies of the image at once (to a system with
    /// the first worker count and tile size), to see the memory budget hold.
    #[arg(long, default_value_t = 0)]
    concurrent: usize,
    /// Also put this many results of the image in one batch and download
    /// its zip: how soon it starts, how fast it streams, the server's memory.
    #[arg(long, default_value_t = 0)]
    batch_zip: usize,
    /// Also build the result's zoomable pyramid (what "Explore at full
    /// resolution" asks for): how long, and the server's memory meanwhile.
    #[arg(long)]
    zoom: bool,

    /// Also measure, over this many seconds, what a system with no job
    /// costs (nisshi polls for its waiting readers): CPU per process.
    #[arg(long, default_value_t = 0)]
    idle: u64,

    /// The uploaded image's format: `jpeg`, or `png` (read by rows on the
    /// master; its baselines are skipped).
    #[arg(long, default_value = "jpeg", value_parser = ["jpeg", "png"])]
    format: String,
    /// Rounds of every measurement, interleaved: each figure is the run
    /// with the median total (times on a shared machine drift by a third).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Partitions of the tasks topic (the server's default: 4).
    #[arg(long, default_value_t = 4)]
    task_partitions: u32,
}

const DEADLINE: Duration = Duration::from_secs(600);

/// The system a distributed run starts.
#[derive(Debug, Clone, Copy)]
struct Shape {
    workers: usize,
    tile: u32,
    task_partitions: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ops = vec![Operation::default(); args.blurs.max(1)];
    let png = args.format == "png";
    let kind = if png { "PNG" } else { "JPEG" };
    eprintln!("generating a {0}x{0} {kind}…", args.size);
    let image = Frame::photo_like(args.size, args.size);
    let jpeg = if png { pipeline::codec::encode_png(&image) } else { encode_jpeg(&image)? };
    drop(image);
    let raw_mb = mb(Frame::byte_len(args.size, args.size) as u64);
    println!(
        "Image: {0}x{0} {kind}, {1:.1} MB ({2:.0} MB raw RGB); operations: {3}x 51x51 Gaussian blur; {4} cores.\n",
        args.size,
        mb(jpeg.len() as u64),
        raw_mb,
        ops.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    if png {
        let pass = master_rows(&jpeg)?;
        println!("The master's pass over the PNG, decoding every row (one thread): {pass:.2} s");
    } else {
        let split = master_split(&jpeg, ops::chain_halo(&ops), 512)?;
        println!("The master's pass over the JPEG, cutting every tile's crop (one thread): {split:.2} s");
    }
    let name = if png { "bench.png" } else { "bench.jpg" };
    let no_baselines = args.no_baselines || png;
    // Every measurement once per round, interleaved, so that a slow spell
    // of the machine falls on all of them alike.
    let runtime = tokio::runtime::Runtime::new()?;
    let task_partitions = args.task_partitions;
    let shape = |workers, tile| Shape { workers, tile, task_partitions };
    let configs: Vec<Shape> = args
        .tile_sizes
        .iter()
        .flat_map(|&tile| args.workers.iter().map(move |&workers| shape(workers, tile)))
        .collect();
    let (mut singles, mut opencvs, mut runs) =
        (Vec::new(), Vec::new(), (0..configs.len()).map(|_| Vec::new()).collect::<Vec<Vec<Run>>>());
    for round in 1..=args.rounds.max(1) {
        eprintln!("round {round} of {}…", args.rounds.max(1));
        if !no_baselines {
            singles.push(baseline(&jpeg, &ops, 512)?);
            if ops.len() == 1 {
                opencvs.extend(opencv(&jpeg)?);
            }
        }
        for (i, &config) in configs.iter().enumerate() {
            runs[i].push(runtime.block_on(distributed((name, &jpeg), &ops, config))?);
        }
    }

    let single = median_by(singles, |b| b.total);
    let opencv = median_by(opencvs, |&s| s);
    match &single {
        Some(single) => println!(
            "Single process (same crates, tiles on all cores): {:.2} s = decode {:.2} + blur {:.2} + encode {:.2}",
            single.total, single.decode, single.process, single.encode
        ),
        None => println!("Baselines skipped (--no-baselines, or a PNG)\n"),
    }
    match opencv {
        Some(seconds) => {
            println!("OpenCV, one process (read, GaussianBlur((51, 51), 0), write JPEG q90): {seconds:.2} s\n")
        }
        None if no_baselines => {}
        None if ops.len() > 1 => println!("OpenCV: compared on the one-blur chain only\n"),
        None => println!("OpenCV: not installed (scripts/setup.sh makes tools/venv)\n"),
    }
    let single = single.map(|b| b.total);

    println!(
        "| workers | tile | total s | upload s | first task ms | decode s | dispatch s | process s | collect s | encode s | tiles/s | through broker MB | broker / input | server peak MB | worker peak MB | CPU s broker / server / workers | vs single process | vs OpenCV |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let scaling = scaling(&configs, &runs);
    for (&Shape { workers, tile, .. }, rounds) in configs.iter().zip(runs) {
        let totals: Vec<String> = rounds.iter().map(|r| format!("{:.2}", r.total)).collect();
        let run = median_by(rounds, |r| r.total).context("at least one round")?;
        let s = &run.stages;
        println!(
            "| {workers} | {tile} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1}x | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} | {} | {} |",
            run.total,
            run.upload,
            s.first_task_ms.unwrap_or(f64::NAN),
            s.decode_ms / 1e3,
            s.dispatch_ms / 1e3,
            s.process_ms / 1e3,
            s.collect_ms / 1e3,
            s.encode_ms / 1e3,
            f64::from(run.tiles) / (s.process_ms / 1e3),
            mb(run.broker_bytes),
            run.broker_bytes as f64 / jpeg.len() as f64,
            mb(run.server_peak),
            mb(run.worker_peak),
            run.cpu[0],
            run.cpu[1],
            run.cpu[2],
            ratio(run.total, single),
            ratio(run.total, opencv),
        );
        eprintln!("{workers} workers, {tile} px tiles: totals {}", totals.join(", "));
    }
    println!("\n(\"vs ...\" is the distributed time over the baseline's: below 1 is faster.)");
    for line in scaling {
        println!("{line}");
    }
    let first = shape(args.workers[0], args.tile_sizes[0]);
    if args.concurrent > 0 {
        runtime.block_on(concurrent(&jpeg, &ops, first, args.concurrent))?;
    }
    if args.batch_zip > 0 {
        runtime.block_on(batch_zip(&jpeg, &ops, first, args.batch_zip))?;
    }
    if args.zoom {
        runtime.block_on(zoom((name, &jpeg), &ops, first))?;
    }
    if args.idle > 0 {
        runtime.block_on(idle(&ops, first, Duration::from_secs(args.idle)))?;
    }
    Ok(())
}

/// The job once more, then its result's Deep Zoom pyramid built on request
/// and polled until ready: the time, and the server's resident memory
/// before and at most while it is built.
async fn zoom((name, image): (&str, &[u8]), chain: &[Operation], shape: Shape) -> anyhow::Result<()> {
    let System { server, api, .. } = &system(chain, shape).await?;
    let job = api.submit_with(name, image.to_vec(), &[("ops", &serde_json::to_string(chain)?)]).await;
    let job = api.finished(&job.id, DEADLINE).await;
    anyhow::ensure!(job.error.is_none(), "the job failed: {:?}", job.error);
    let before = server.memory_bytes().unwrap_or(0);
    let mut peak = before;
    let started = Instant::now();
    let url = api.url(&format!("/api/jobs/{}/zoom", job.id));
    loop {
        let response = reqwest::get(&url).await?;
        peak = peak.max(server.memory_bytes().unwrap_or(0));
        match response.status().as_u16() {
            200 => break,
            202 => {}
            status => anyhow::bail!("the pyramid answered {status}: {}", response.text().await?),
        }
        anyhow::ensure!(started.elapsed() < DEADLINE, "the pyramid was not built");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let megapixels = f64::from(job.width) * f64::from(job.height) / 1e6;
    println!(
        "\nThe result's zoomable pyramid ({}, {}x{}): built in {took:.2} s ({:.0} MP/s); server resident {:.0} MB before, at most {:.0} MB while building",
        job.output.label(),
        job.width,
        job.height,
        megapixels / took,
        mb(before),
        mb(peak),
    );
    Ok(())
}

/// The CPU a system costs with no job, over `period` (after one small job
/// and a few seconds for the clients to settle), in percent of one core.
async fn idle(chain: &[Operation], shape: Shape, period: Duration) -> anyhow::Result<()> {
    let system = system(chain, shape).await?;
    // Not a synchronisation: the warm-up job's last fetches and commits
    // are what this leaves out of the measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = system.cpu_seconds();
    tokio::time::sleep(period).await;
    let after = system.cpu_seconds();
    let percent = |i: usize| 100.0 * (after[i] - before[i]) / period.as_secs_f64();
    println!(
        "\nIdle, over {} s (no job; the bench's workers heartbeat every second): broker {:.0}%, server {:.0}%, {} workers {:.0}% of a core",
        period.as_secs(),
        percent(0),
        percent(1),
        system.pool.len(),
        percent(2)
    );
    // The master stops reading results after two idle seconds: the first job
    // after a pause against the same-sized job right after it.
    let mut processed = Vec::new();
    for height in [2048, 2048 + 64] {
        let job = system.api.submit(&testkit::test_image(2048, height), chain).await;
        let job = system.api.finished(&job.id, DEADLINE).await;
        processed.push(job.stages.context("a finished job has its stages")?.process_ms);
    }
    println!(
        "A 2048 px job after the idle spell: its tiles processed in {:.0} ms; the next, started at once: {:.0} ms",
        processed[0], processed[1]
    );
    Ok(())
}

/// `n` PNG results of `jpeg` in one batch (the first processed, the rest
/// from the result cache), then the batch's zip downloaded: the time to its first
/// byte and to its end, and the server's resident memory while it streams.
async fn batch_zip(jpeg: &[u8], chain: &[Operation], shape: Shape, n: usize) -> anyhow::Result<()> {
    let System { server, api, .. } = &system(chain, shape).await?;
    let client = reqwest::Client::new();
    let batch: app::api::Batch = client.post(api.url("/api/batches")).send().await?.json().await?;
    let ops = serde_json::to_string(chain)?;
    for i in 0..n {
        // PNG: large results (the point is a zip much larger than the server's memory).
        let fields = [("batch", batch.id.as_str()), ("ops", ops.as_str()), ("format", "png")];
        let job = api.submit_with(&format!("bench-{i}.jpg"), jpeg.to_vec(), &fields).await;
        api.finished(&job.id, DEADLINE).await;
    }
    let before = server.memory_bytes().unwrap_or(0);
    let mut peak = before;
    let started = Instant::now();
    let response = client.get(api.url(&format!("/api/batches/{}/results.zip", batch.id))).send().await?;
    anyhow::ensure!(response.status() == 200, "the zip answered {}", response.status());
    let (mut body, mut bytes, mut first) = (response.bytes_stream(), 0u64, None);
    while let Some(chunk) = body.next().await {
        first.get_or_insert_with(|| started.elapsed());
        bytes += chunk?.len() as u64;
        peak = peak.max(server.memory_bytes().unwrap_or(0));
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "
A batch of {n} results, {:.0} MB as one zip: first byte after {:.0} ms, all in {took:.2} s ({:.0} MB/s); server resident {:.0} MB before, at most {:.0} MB while streaming",
        mb(bytes),
        first.unwrap_or_default().as_secs_f64() * 1e3,
        mb(bytes) / took,
        mb(before),
        mb(peak),
    );
    Ok(())
}

/// The item with the median `key` (the upper one of an even count).
fn median_by<T>(mut items: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = items.len() / 2;
    items.into_iter().nth(middle)
}

/// How much faster more workers are than the fewest, per tile size: the
/// medians' ratio, and each round's (its runs were side by side). With how
/// busy the larger job kept the cores and the workers' share of that: the
/// limit when the broker and the master share the cores with the workers.
fn scaling(configs: &[Shape], runs: &[Vec<Run>]) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut lines = Vec::new();
    for (i, base) in configs.iter().enumerate() {
        let fewest = configs.iter().filter(|c| c.tile == base.tile).map(|c| c.workers).min();
        if fewest != Some(base.workers) {
            continue;
        }
        for (j, more) in configs.iter().enumerate().filter(|(_, c)| c.tile == base.tile && c.workers > base.workers) {
            let (Some(a), Some(b)) = (median_run(&runs[i]), median_run(&runs[j])) else { continue };
            let rounds: Vec<String> =
                runs[i].iter().zip(&runs[j]).map(|(a, b)| format!("{:.2}x", a.total / b.total)).collect();
            let cpu: f64 = b.cpu.iter().sum();
            lines.push(format!(
                "{} -> {} workers, {} px tiles: {:.2}x faster (medians; rounds {}); with {} workers the {} cores were {:.0}% busy, {:.0}% of that in the workers",
                base.workers,
                more.workers,
                base.tile,
                a.total / b.total,
                rounds.join(", "),
                more.workers,
                cores,
                100.0 * cpu / (b.total * cores),
                100.0 * b.cpu[2] / cpu,
            ));
        }
    }
    lines
}

/// The run with the median total.
fn median_run(rounds: &[Run]) -> Option<&Run> {
    median_by(rounds.iter().collect(), |r| r.total)
}

/// `total` over a baseline's time, or a dash without one.
fn ratio(total: f64, baseline: Option<f64>) -> String {
    baseline.map_or("-".to_owned(), |b| format!("{:.2}x", total / b))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn encode_jpeg(frame: &Frame) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode(
        &frame.pixels,
        frame.width,
        frame.height,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// Seconds per stage of the single-process baseline.
struct Baseline {
    decode: f64,
    process: f64,
    encode: f64,
    total: f64,
}

fn baseline(jpeg: &[u8], chain: &[Operation], tile: u32) -> anyhow::Result<Baseline> {
    let started = Instant::now();
    let any = Limits { min_dimension: 1, max_dimension: u32::MAX, max_pixels: u64::MAX };
    let info = intake::inspect(jpeg, any).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let input = intake::decode(jpeg, info).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let decode = started.elapsed().as_secs_f64();

    let t = Instant::now();
    let grid = TileGrid::new(input.width, input.height, tile);
    let halo = ops::chain_halo(chain);
    let (next, done) = (AtomicU32::new(0), Mutex::new(Vec::new()));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(rect) = grid.tile(i) else { break };
                    let out = ops::process_tile(chain, input.crop_with_halo(rect, halo), halo);
                    done.lock().expect("lock").push((rect, out));
                }
            });
        }
    });
    let mut output = Frame::black(input.width, input.height);
    for (rect, tile) in done.into_inner().expect("lock") {
        output.paste(rect.x, rect.y, &tile);
    }
    let process = t.elapsed().as_secs_f64();

    let t = Instant::now();
    // JPEG q90 coded as the job's result is.
    let result = pipeline::jpeg::encode_tile(&output, 90)?;
    std::hint::black_box(result);
    let encode = t.elapsed().as_secs_f64();
    Ok(Baseline { decode, process, encode, total: started.elapsed().as_secs_f64() })
}

/// Seconds the master spends reading a PNG upload by rows (as RGB).
fn master_rows(png: &[u8]) -> anyhow::Result<f64> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), png)?;
    let started = Instant::now();
    use server::rows::Rows;
    let mut rows = server::rows::PngRows::open(file.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut row = Vec::new();
    while rows.next_row(pipeline::Channels::Rgb, &mut row).map_err(|e| anyhow::anyhow!("{e}"))? {}
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds the master spends on a JPEG upload: cutting every tile's crop
/// (tile, halo and margin) in one pass over the scan.
fn master_split(jpeg: &[u8], halo: u32, tile: u32) -> anyhow::Result<f64> {
    use pipeline::jpeg::Jpeg;
    let (image, scan) = Jpeg::parse(jpeg)?;
    let layout = image.layout();
    let grid = TileGrid::new(layout.width, layout.height, tile);
    let wanted: Vec<_> = grid.tiles().map(|(_, rect)| layout.covering_tile(rect, halo)).collect();
    let started = Instant::now();
    let mut bytes = 0;
    image.split(scan, &wanted, |_, crop| {
        bytes += crop.bytes.len();
        true
    })?;
    std::hint::black_box(bytes);
    Ok(started.elapsed().as_secs_f64())
}

struct Run {
    total: f64,
    upload: f64,
    stages: Stages,
    tiles: u32,
    broker_bytes: u64,
    server_peak: u64,
    worker_peak: u64,
    /// CPU seconds the job cost the broker, the server and all workers.
    cpu: [f64; 3],
}

/// A broker, the release server and `workers` release workers, warmed up.
/// (Fields drop in order: the workers and the server stop before the broker.)
struct System {
    pool: Vec<Process>,
    server: Process,
    broker: Broker,
    api: testkit::Api,
    _data: tempfile::TempDir,
}

impl System {
    /// CPU seconds used so far by the broker, the server and the workers.
    fn cpu_seconds(&self) -> [f64; 3] {
        let of = |p: Option<f64>| p.unwrap_or(0.0);
        let workers = self.pool.iter().map(|w| of(w.cpu_seconds())).sum();
        [of(self.broker.cpu_seconds()), of(self.server.cpu_seconds()), workers]
    }
}

async fn system(chain: &[Operation], Shape { workers, tile, task_partitions }: Shape) -> anyhow::Result<System> {
    let broker = Broker::start();
    let prefix = unique_prefix("bench");
    let data = tempfile::tempdir()?;
    let env = [
        ("TILEPIPE_TILE_SIZE", tile.to_string()),
        ("TILEPIPE_MAX_UPLOAD_BYTES", (4u64 << 30).to_string()),
        ("TILEPIPE_TASK_PARTITIONS", task_partitions.to_string()),
    ];
    let (server, api) = server_process(&binary("server"), &broker, &prefix, data.path(), &env);
    let pool: Vec<Process> =
        (0..workers).map(|i| worker_process(&binary("worker"), &broker, &prefix, &format!("bench-{i}"))).collect();
    eventually("the workers to report", DEADLINE, || async {
        let listed: Vec<Worker> = reqwest::get(api.url("/api/workers")).await.ok()?.json().await.ok()?;
        (listed.iter().filter(|w| w.status == WorkerStatus::Alive).count() == workers).then_some(())
    })
    .await;
    // A small job first: the group has settled and every worker holds partitions.
    let warm = api.submit(&testkit::test_image(1024, 1024), chain).await;
    api.finished(&warm.id, DEADLINE).await;
    Ok(System { pool, server, broker, api, _data: data })
}

/// `n` uploads of `jpeg` at once: how many were admitted and how many got
/// 503, the seconds until all admitted ones were done, the server's peak.
async fn concurrent(jpeg: &[u8], chain: &[Operation], shape: Shape, n: usize) -> anyhow::Result<()> {
    let System { server, api, .. } = &system(chain, shape).await?;
    let started = Instant::now();
    let client = reqwest::Client::new();
    let ops = serde_json::to_string(chain)?;
    let uploads: Vec<_> = (0..n)
        .map(|i| {
            let part = reqwest::multipart::Part::bytes(jpeg.to_vec()).file_name(format!("bench-{i}.jpg"));
            let form = reqwest::multipart::Form::new().part("image", part).text("ops", ops.clone());
            tokio::spawn(client.post(api.url("/api/jobs")).multipart(form).send())
        })
        .collect();
    let (mut admitted, mut busy) = (Vec::new(), 0);
    for upload in uploads {
        let answer = upload.await??;
        match answer.status().as_u16() {
            201 => admitted.push(answer.json::<Job>().await?.id),
            503 => busy += 1,
            other => anyhow::bail!("upload answered {other}: {}", answer.text().await?),
        }
    }
    for id in &admitted {
        let job = api.finished(id, DEADLINE).await;
        anyhow::ensure!(job.error.is_none(), "a job failed: {:?}", job.error);
    }
    println!(
        "\n{n} uploads at once: {} admitted and done in {:.2} s, {busy} refused with 503 busy; server peak {:.0} MB (memory budget 1 GiB)",
        admitted.len(),
        started.elapsed().as_secs_f64(),
        mb(server.peak_memory_bytes().unwrap_or(0)),
    );
    Ok(())
}

async fn distributed((name, image): (&str, &[u8]), chain: &[Operation], shape: Shape) -> anyhow::Result<Run> {
    let system = system(chain, shape).await?;
    let System { server, pool, api, .. } = &system;

    let bytes_before = broker_bytes(api).await?;
    // The job's end is heard from the event stream, as the dashboard hears it:
    // polling would cost the server (and this process) CPU the job competes for.
    let mut events = api.events().await;
    let cpu_before = system.cpu_seconds();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let part = reqwest::multipart::Part::bytes(image.to_vec()).file_name(name.to_owned());
    // The default result: the input's own format (for a JPEG, q90, as the baselines write).
    let form = reqwest::multipart::Form::new().part("image", part).text("ops", serde_json::to_string(chain)?);
    let response = client.post(api.url("/api/jobs")).multipart(form).send().await?;
    anyhow::ensure!(response.status() == 201, "upload refused: {}", response.text().await?);
    let upload = started.elapsed().as_secs_f64();
    let job: Job = response.json().await?;
    // The finished job's event carries the whole job, stage times included.
    let finished = async {
        while let Some(event) = events.next().await {
            match event {
                Event::Job(j) if j.id == job.id && j.status.is_finished() => return Some(j),
                _ => {}
            }
        }
        None
    };
    let finished = tokio::time::timeout(DEADLINE.saturating_sub(started.elapsed()), finished).await;
    let job = finished.ok().flatten().context("the job did not finish")?;
    let total = started.elapsed().as_secs_f64();
    let cpu_after = system.cpu_seconds();
    anyhow::ensure!(job.error.is_none(), "the job failed: {:?}", job.error);

    let broker_bytes = broker_bytes(api).await? - bytes_before;
    let stages = job.stages.context("a finished job has stage times")?;
    Ok(Run {
        total,
        upload,
        stages,
        tiles: job.tiles_total,
        broker_bytes,
        server_peak: server.peak_memory_bytes().unwrap_or(0),
        worker_peak: pool.iter().filter_map(Process::peak_memory_bytes).max().unwrap_or(0),
        cpu: std::array::from_fn(|i| cpu_after[i] - cpu_before[i]),
    })
}

/// The median of three runs of the same job in one OpenCV process (all
/// cores), timed inside the script; `None` without `tools/venv`.
fn opencv(jpeg: &[u8]) -> anyhow::Result<Option<f64>> {
    let python = std::path::Path::new("tools/venv/bin/python");
    if !python.exists() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in.jpg"), dir.path().join("out.jpg"));
    std::fs::write(&input, jpeg)?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let run = std::process::Command::new(python)
            .arg("tools/opencv_reference.py")
            .arg("job")
            .args([&input, &output])
            .output()?;
        anyhow::ensure!(run.status.success(), "OpenCV: {}", String::from_utf8_lossy(&run.stderr));
        times.push(String::from_utf8_lossy(&run.stdout).trim().parse::<f64>()?);
    }
    times.sort_by(f64::total_cmp);
    Ok(Some(times[1]))
}

/// Bytes of tasks and replies the server has moved through the broker.
async fn broker_bytes(api: &testkit::Api) -> anyhow::Result<u64> {
    let metrics = reqwest::get(api.url("/metrics")).await?.text().await?;
    let counter = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(0.0) as u64
    };
    Ok(counter("tilepipe_task_bytes_total ") + counter("tilepipe_result_bytes_total "))
}
