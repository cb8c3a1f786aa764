//! `tilepipe submit`: uploads files and folders a few at a time, follows
//! each job on the event stream and writes each result as it finishes.
//! Files whose result is already in the output folder are skipped, so a
//! second run picks up where the first stopped.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use app::api::{Event, Job, JobStatus};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

use crate::client::Client;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image files, or folders (searched recursively; hidden files skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,

    /// The operations, as JSON: e.g. '[{"op":"grayscale"},{"op":"gaussian_blur","kernel":51}]'
    /// (default: the server's, a 51x51 Gaussian blur).
    #[arg(long)]
    pub ops: Option<String>,

    /// The result's format: same (as the input: PNG, JPEG, WebP and TIFF
    /// stay so, others become PNG), png, jpeg, webp or tiff.
    #[arg(long, default_value = "same", value_parser = ["same", "png", "jpeg", "webp", "tiff"])]
    pub format: String,

    /// JPEG quality, 1 to 100.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: Option<u8>,

    /// Where results are written, as <name>.<format>.
    #[arg(long, default_value = "tilepipe-results")]
    pub out: PathBuf,

    /// Uploads at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

/// What became of one file.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub file: PathBuf,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Done,
    Skipped,
    Failed,
}

/// The latest state of every job the event stream told of.
#[derive(Default)]
struct Tracker {
    jobs: Mutex<HashMap<String, Job>>,
    changed: Notify,
}

impl Tracker {
    fn update(&self, event: Event) {
        let mut jobs = self.jobs.lock().expect("lock");
        match event {
            Event::Job(job) => {
                jobs.insert(job.id.clone(), job);
            }
            Event::Tile(tile) => {
                if let Some(job) = jobs.get_mut(&tile.job_id) {
                    job.tiles_done = (job.tiles_done + 1).min(job.tiles_total);
                }
            }
            _ => return,
        }
        drop(jobs);
        self.changed.notify_waiters();
    }

    fn put(&self, job: Job) {
        self.jobs.lock().expect("lock").insert(job.id.clone(), job);
    }

    fn get(&self, id: &str) -> Option<Job> {
        self.jobs.lock().expect("lock").get(id).cloned()
    }
}

/// Runs the command; the outcomes, one per file, in the order given.
pub async fn run(client: &Client, args: Args, json: bool) -> anyhow::Result<Vec<Outcome>> {
    let mut fields = form_fields(&args)?;
    let files = collect(&args.paths)?;
    anyhow::ensure!(!files.is_empty(), "no files found in {}", show(&args.paths));
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let targets = targets(&files, &args.format, &args.out);
    // One batch for this run's uploads: the server shows them together and
    // zips their results.
    let batch = match targets.iter().any(|t| !t.exists()) {
        true => Some(client.create_batch().await?.id),
        false => None,
    };
    if let Some(id) = &batch {
        fields.push(("batch", id.clone()));
    }

    let tracker = Arc::new(Tracker::default());
    // Events first, so that no job's end is missed; polling covers a lost stream.
    if let Ok(events) = client.events().await {
        let tracker = Arc::clone(&tracker);
        tokio::spawn(events.for_each(move |event| {
            tracker.update(event);
            std::future::ready(())
        }));
    }

    let bars = if json { MultiProgress::with_draw_target(ProgressDrawTarget::hidden()) } else { MultiProgress::new() };
    let total = bars.add(ProgressBar::new(files.len() as u64));
    total.set_style(style("{prefix:>12.bold} [{bar:30}] {pos}/{len} files, {elapsed}"));
    total.set_prefix("total");
    let permits = Arc::new(Semaphore::new(usize::from(args.jobs)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (file, target) in files.into_iter().zip(targets) {
        if target.exists() {
            let outcome = Outcome {
                file,
                status: Status::Skipped,
                job_id: None,
                result: Some(target),
                error: Some("its result is already there".into()),
            };
            report(&bars, &outcome, json);
            total.inc(1);
            tasks.push(tokio::spawn(async move { outcome }));
            continue;
        }
        let (client, tracker, bars, total, fields, permits) =
            (client.clone(), Arc::clone(&tracker), bars.clone(), total.clone(), fields.clone(), Arc::clone(&permits));
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let bar = bars.insert_from_back(1, ProgressBar::new(0));
            bar.set_prefix(short_name(&file));
            let outcome = one(&client, &tracker, &bar, &file, &fields, &target).await;
            bar.finish_and_clear();
            bars.remove(&bar);
            report(&bars, &outcome, json);
            total.inc(1);
            outcome
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.context("a file's task panicked")?);
    }
    total.finish_and_clear();
    summarise(&outcomes, batch.as_deref(), started.elapsed(), json);
    Ok(outcomes)
}

/// Uploads one file, follows its job and downloads its result.
async fn one(
    client: &Client,
    tracker: &Tracker,
    bar: &ProgressBar,
    file: &Path,
    fields: &[(&'static str, String)],
    target: &Path,
) -> Outcome {
    let failed = |job_id: Option<String>, error: String| Outcome {
        file: file.to_owned(),
        status: Status::Failed,
        job_id,
        result: None,
        error: Some(error),
    };
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    bar.set_style(style("{prefix:>12.bold} [{bar:30}] {bytes}/{total_bytes} uploading"));
    bar.set_length(size);
    let progress = bar.clone();
    let job = match client.submit(file, fields, move |sent| progress.set_position(sent)).await {
        Ok(job) => job,
        Err(e) => return failed(None, format!("{e:#}")),
    };
    tracker.put(job.clone());
    bar.set_style(style("{prefix:>12.bold} [{bar:30}] {pos}/{len} tiles {msg}"));
    bar.set_length(u64::from(job.tiles_total));
    let job = follow(client, tracker, bar, &job.id).await;
    match job.status {
        JobStatus::Done => match client.download(&job.id, target).await {
            Ok(_) => Outcome {
                file: file.to_owned(),
                status: Status::Done,
                job_id: Some(job.id),
                result: Some(target.to_owned()),
                error: None,
            },
            Err(e) => failed(Some(job.id), format!("downloading the result: {e:#}")),
        },
        status => {
            let why = job.error.clone().unwrap_or_else(|| format!("the job was {}", status.as_str()));
            failed(Some(job.id), why)
        }
    }
}

/// Waits for a job to finish, showing its tiles: woken by its events, and
/// asking the server every few seconds in case the stream missed one.
async fn follow(client: &Client, tracker: &Tracker, bar: &ProgressBar, id: &str) -> Job {
    let mut last_poll = Instant::now();
    loop {
        let changed = tracker.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(job) = tracker.get(id) {
            bar.set_length(u64::from(job.tiles_total));
            bar.set_position(u64::from(job.tiles_done));
            bar.set_message(if job.cached_from.is_some() { "(from the result cache)" } else { "" });
            if job.status.is_finished() {
                return job;
            }
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if last_poll.elapsed() >= Duration::from_secs(2) {
            last_poll = Instant::now();
            if let Ok(job) = client.job(id).await {
                tracker.put(job);
            }
        }
    }
}

/// The form fields every upload carries, checked here first so that a typo
/// fails at once rather than once per file.
fn form_fields(args: &Args) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut fields = vec![("format", args.format.clone())];
    if let Some(ops) = &args.ops {
        let chain: Vec<pipeline::Operation> =
            serde_json::from_str(ops).context("--ops must be a JSON list of operations")?;
        pipeline::ops::validate_chain(&chain).context("--ops")?;
        fields.push(("ops", ops.clone()));
    }
    if let Some(quality) = args.quality {
        anyhow::ensure!(matches!(args.format.as_str(), "jpeg" | "same"), "--quality is for JPEG results");
        fields.push(("quality", quality.to_string()));
    }
    Ok(fields)
}

/// The files named, folders searched recursively, in a stable order.
fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, into: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() { walk(&path, into)? } else { into.push(path) }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => walk(path, &mut files)?,
            Ok(_) => files.push(path.clone()),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        }
    }
    Ok(files)
}

/// Each file's result path: `<out>/<stem>.<ext>`, or `<out>/<name>.<ext>`
/// for a file whose stem another file already took.
fn targets(files: &[PathBuf], format: &str, out: &Path) -> Vec<PathBuf> {
    let mut taken = BTreeSet::new();
    files
        .iter()
        .map(|file| {
            let ext = extension(file, format);
            let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let name = file.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let mut target = format!("{stem}.{ext}");
            if !taken.insert(target.clone()) {
                target = format!("{name}.{ext}");
                taken.insert(target.clone());
            }
            out.join(target)
        })
        .collect()
}

/// The extension of a file's result: as the server picks the format for `same`.
fn extension(file: &Path, format: &str) -> &'static str {
    let input = file.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match (format, input.as_str()) {
        ("jpeg", _) | ("same", "jpg" | "jpeg") => "jpg",
        ("webp", _) | ("same", "webp") => "webp",
        ("tiff", _) | ("same", "tif" | "tiff") => "tif",
        _ => "png",
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> ")
}

fn short_name(file: &Path) -> String {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.chars().count() <= 12 { name } else { format!("{}…", name.chars().take(11).collect::<String>()) }
}

fn show(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// One line per file as it finishes: on stdout, above the bars.
fn report(bars: &MultiProgress, outcome: &Outcome, json: bool) {
    let line = if json {
        serde_json::to_string(outcome).expect("an outcome serialises")
    } else {
        let file = outcome.file.display();
        match outcome.status {
            Status::Done => format!("done     {file} -> {}", outcome.result.as_ref().expect("a result").display()),
            Status::Skipped => {
                format!("skipped  {file}: {} exists", outcome.result.as_ref().expect("a result").display())
            }
            Status::Failed => format!("failed   {file}: {}", outcome.error.as_deref().unwrap_or("unknown error")),
        }
    };
    // Bars draw on stderr; results go to stdout, which scripts read.
    bars.suspend(|| println!("{line}"));
}

fn summarise(outcomes: &[Outcome], batch: Option<&str>, took: Duration, json: bool) {
    let count = |status| outcomes.iter().filter(|o| o.status == status).count();
    let (done, skipped, failed) = (count(Status::Done), count(Status::Skipped), count(Status::Failed));
    if json {
        let summary =
            serde_json::json!({"summary": {"done": done, "skipped": skipped, "failed": failed, "batch": batch}});
        println!("{summary}");
        return;
    }
    println!("{done} done, {skipped} skipped, {failed} failed in {:.1} s", took.as_secs_f64());
    if let Some(batch) = batch {
        println!("batch {batch}: /api/batches/{batch}/results.zip has every result");
    }
    for o in outcomes.iter().filter(|o| o.status == Status::Failed) {
        println!("  {}: {}", o.file.display(), o.error.as_deref().unwrap_or("unknown error"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_named_after_their_inputs_without_collisions() {
        let files = ["a/x.png", "b/x.png", "y.JPG", "z.tiff", "w.webp"].map(PathBuf::from);
        let same = targets(&files, "same", Path::new("out"));
        let names: Vec<_> = same.iter().map(|t| t.display().to_string()).collect();
        assert_eq!(names, ["out/x.png", "out/x.png.png", "out/y.jpg", "out/z.tif", "out/w.webp"]);
        let jpeg = targets(&files[2..3], "jpeg", Path::new("out"));
        assert_eq!(jpeg, [PathBuf::from("out/y.jpg")]);
    }

    #[test]
    fn options_are_checked_before_anything_is_sent() {
        let args = |ops: &str, format: &str, quality| Args {
            paths: vec![],
            ops: Some(ops.into()),
            format: format.into(),
            quality,
            out: "out".into(),
            jobs: 1,
        };
        assert!(form_fields(&args(r#"[{"op":"invert"}]"#, "png", None)).is_ok());
        let bad_kernel = form_fields(&args(r#"[{"op":"box_blur","kernel":4}]"#, "png", None)).unwrap_err();
        assert!(format!("{bad_kernel:#}").contains("kernel must be an odd number"), "{bad_kernel:#}");
        assert!(form_fields(&args("not json", "png", None)).is_err());
        assert!(form_fields(&args(r#"[{"op":"invert"}]"#, "png", Some(80))).is_err(), "quality for PNG");
    }
}
