//! The worker conformance kit: runs a worker command against a real broker,
//! sends it a fixed corpus of tasks and checks what comes back against
//! docs/protocol.md: every reply's pixels against tilepipe's own pipeline,
//! failures, dead letters, stopped jobs, heartbeats, commit discipline,
//! liveness and a clean exit on SIGTERM.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use pipeline::wire::{Control, Heartbeat, MAX_MESSAGE_BYTES, RawReply, TileKey, Topics};
use plumbing::kafka::client_config;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

pub mod broker;
pub mod corpus;
mod observe;
mod process;
pub mod report;
pub mod tolerance;
mod verdict;

pub use broker::Broker;
use corpus::{Case, Corpus, Expect};
use observe::{Observer, Offsets};
use process::WorkerProcess;
pub use report::Report;

/// The protocol version the kit checks (docs/protocol.md).
pub const PROTOCOL_VERSION: u32 = 1;

/// Partitions of the kit's tasks topic: more than one, so a worker must read them all.
const TASK_PARTITIONS: i32 = 3;
/// Seconds between heartbeats asked of the worker.
const HEARTBEAT_SECS: u64 = 1;
/// How long a worker has to apply a `job_stopped` before the job's tasks come.
const CONTROL_GRACE: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone)]
pub struct Options {
    /// The worker command, run with `sh -c`.
    pub worker: String,
    /// A broker to use; by default the kit starts nisshi on a free port.
    pub brokers: Option<String>,
    /// How long each phase may wait for replies.
    pub deadline: Duration,
}

/// A case as sent: where its task lies and which sending of its tile it is.
struct Sent {
    case: Case,
    partition: i32,
    offset: i64,
    nth: usize,
}

/// Runs the whole kit and returns its report. `Err` only when the kit itself
/// cannot run (no broker, a worker command that cannot start).
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let broker = if options.brokers.is_none() { Some(Broker::start()) } else { None };
    let brokers = options.brokers.clone().or_else(|| broker.as_ref().map(|b| b.addr.clone())).expect("a broker");
    let run_id = format!("conformance-{:x}", plumbing::now_ms());
    let topics = Topics::new(&format!("{run_id}-"));
    plumbing::kafka::ensure_topics(&brokers, &topics, TASK_PARTITIONS).await?;
    let producer: FutureProducer = client_config(&brokers)
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        .set("acks", "all")
        .create()
        .context("creating the kit's producer")?;
    let observer = Observer::start(&brokers, &topics, &format!("{run_id}-kit"))?;
    let offsets = Arc::new(Offsets::new(&brokers, &topics, TASK_PARTITIONS)?);
    let worker_id = format!("{run_id}-worker");
    let mut report = Report { worker: options.worker.clone(), checks: Vec::new() };
    let mut session =
        Session { producer, topics, sent: Arc::new(Mutex::new(Vec::new())), observer, deadline: options.deadline };
    let mut corpus = Corpus::new(&run_id);

    // Queued before the worker starts: a new group must read from the start.
    let queued = session.send_all(corpus.operations(), None).await?;
    let dir = tempfile::tempdir()?;
    let env = [
        ("TILEPIPE_BROKERS", brokers.clone()),
        ("TILEPIPE_TOPIC_PREFIX", format!("{run_id}-")),
        ("TILEPIPE_WORKER_ID", worker_id.clone()),
        ("TILEPIPE_HEARTBEAT_SECS", HEARTBEAT_SECS.to_string()),
    ];
    let mut worker = WorkerProcess::spawn(&options.worker, &env, dir.path().join("worker.log"))?;
    let watch = CommitWatch::start(Arc::clone(&offsets), &session);
    let started = Instant::now();
    let all_queued = session.wait_answered(queued.clone(), &mut worker).await;
    report.check(
        "reads tasks queued before it joined (auto.offset.reset = earliest)",
        match all_queued {
            true => Ok(format!("{} tasks answered {:.1} s after start", queued.len(), started.elapsed().as_secs_f64())),
            false => Err(format!("not every task queued before it started was answered within {:?}", options.deadline)),
        },
    );

    // A job stopped on control: its tasks are skipped. The redelivered pair
    // follows them on the same partition, so once it is answered the
    // stopped tasks have been seen.
    let stop = Control::JobStopped { job_id: corpus.stopped_job() }.encode();
    session.send(&session.topics.control.clone(), 0, &corpus.stopped_job(), &stop).await?;
    tokio::time::sleep(CONTROL_GRACE).await;
    let mut stopped_then_redelivered = corpus.of_stopped_job();
    stopped_then_redelivered.extend(corpus.redelivered());
    let mut later = session.send_all(stopped_then_redelivered, Some(0)).await?;
    let mut rest = corpus.jpeg_tasks();
    rest.push(corpus.jpeg_result());
    rest.extend(corpus.failing());
    rest.extend(corpus.dead_letters());
    later.extend(session.send_all(rest, None).await?);
    session.wait_answered(later, &mut worker).await;
    // Time for a wrong answer to a stopped job's task to show.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let alive = worker.is_running();
    report.check(
        "stays up through malformed and hostile tasks",
        if alive { Ok(String::new()) } else { Err("the worker exited during the run".into()) },
    );
    session.judge_cases(&worker_id, &mut report);
    summarise_operations(&mut report);
    let processed = session.processed();
    session.judge_heartbeats(&worker_id, processed, &mut report).await;
    watch.stop_and_judge(&mut report).await;
    judge_final_commits(&offsets, &mut report).await;
    judge_exit(&mut worker, alive, &mut report).await;
    drop(session);
    drop(broker);
    Ok(report)
}

/// Which operations the worker implements: all, or all but those it
/// declined as unsupported (a partial worker).
fn summarise_operations(report: &mut Report) {
    let declined: std::collections::BTreeSet<String> = report
        .checks
        .iter()
        .filter_map(|c| match &c.outcome {
            report::Outcome::Pass(d) => d.strip_prefix(verdict::DECLINED).map(str::to_owned),
            report::Outcome::Fail(_) => None,
        })
        .collect();
    report.pass(
        "operations implemented",
        match declined.is_empty() {
            true => "all".to_owned(),
            false => format!(
                "all but {} (declined as unsupported: a partial worker)",
                declined.into_iter().collect::<Vec<_>>().join(", ")
            ),
        },
    );
}

/// Whether a worker still running exits on SIGTERM; and, if anything
/// failed, the worker's last output for reference.
async fn judge_exit(worker: &mut WorkerProcess, alive: bool, report: &mut Report) {
    if alive {
        report.check(
            "exits on SIGTERM",
            match worker.terminate(Duration::from_secs(20)).await {
                Some(took) => Ok(format!("in {:.1} s", took.as_secs_f64())),
                None => {
                    Err("still running 20 s after SIGTERM; finish the current tile, leave the group and exit".into())
                }
            },
        );
    }
    if !report.passed() {
        let tail = worker.tail(25);
        if !tail.is_empty() {
            report.pass("the worker's last output (for reference)", format!("\n{tail}"));
        }
    }
}

struct Session {
    producer: FutureProducer,
    topics: Topics,
    sent: Arc<Mutex<Vec<Sent>>>,
    observer: Observer,
    deadline: Duration,
}

impl Session {
    async fn send(&self, topic: &str, partition: i32, key: &str, payload: &[u8]) -> anyhow::Result<(i32, i64)> {
        let record = FutureRecord::to(topic).partition(partition).key(key).payload(payload);
        let delivery = self.producer.send(record, Duration::from_secs(10)).await;
        let delivered = delivery.map_err(|(e, _)| anyhow::anyhow!("sending to {topic}: {e}"))?;
        Ok((delivered.partition, delivered.offset))
    }

    /// Sends the cases to `partition`, or round the tasks partitions;
    /// returns their indices.
    async fn send_all(&mut self, cases: Vec<Case>, partition: Option<i32>) -> anyhow::Result<Vec<usize>> {
        let mut indices = Vec::new();
        for case in cases {
            let index = self.sent.lock().expect("lock").len();
            let nth = self.sent.lock().expect("lock").iter().filter(|s| s.case.key() == case.key()).count();
            let partition = partition.unwrap_or(index as i32 % TASK_PARTITIONS);
            let (partition, offset) =
                self.send(&self.topics.tasks.clone(), partition, &case.key(), &case.payload).await?;
            self.sent.lock().expect("lock").push(Sent { case, partition, offset, nth });
            indices.push(index);
        }
        Ok(indices)
    }

    /// Waits until the cases at `indices` are answered (or the deadline, or
    /// the worker's exit); whether they all were.
    async fn wait_answered(&self, indices: Vec<usize>, worker: &mut WorkerProcess) -> bool {
        let start = Instant::now();
        loop {
            let done = {
                let sent = self.sent.lock().expect("lock");
                let log = self.observer.log.lock().expect("lock");
                indices.iter().all(|&i| {
                    let s = &sent[i];
                    matches!(s.case.expect, Expect::Skipped)
                        || verdict::answered(&s.case, s.nth, &log.results, &log.dead_letters)
                })
            };
            if done {
                return true;
            }
            if start.elapsed() > self.deadline || !worker.is_running() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn judge_cases(&self, worker_id: &str, report: &mut Report) {
        let sent = self.sent.lock().expect("lock");
        let log = self.observer.log.lock().expect("lock");
        for s in sent.iter() {
            report.check(&s.case.name, verdict::judge(&s.case, s.nth, worker_id, &log.results, &log.dead_letters));
        }
        let mut keys = std::collections::HashSet::new();
        let duplicates: Vec<String> = log
            .results
            .iter()
            .filter_map(|r| verdict::reply_ids(&r.payload))
            .filter(|ids| !keys.insert(ids.clone()))
            .filter(|(job, tile)| !sent.iter().any(|s| s.nth > 0 && &s.case.job_id == job && s.case.tile == *tile))
            .map(|(job, tile)| TileKey::new(&job, tile).to_string())
            .collect();
        report.check(
            "answers each sending once",
            match duplicates.first() {
                None => Ok(String::new()),
                Some(key) => Err(format!("{} extra replies, e.g. to {key}", duplicates.len())),
            },
        );
    }

    /// Results (not failures) the worker sent.
    fn processed(&self) -> u64 {
        let log = self.observer.log.lock().expect("lock");
        log.results.iter().filter(|r| matches!(RawReply::parse(&r.payload), Ok(RawReply::Done(..)))).count() as u64
    }

    async fn judge_heartbeats(&self, worker_id: &str, processed: u64, report: &mut Report) {
        // The count catches up within a heartbeat or two.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3 * HEARTBEAT_SECS + 1) {
            let last = self.observer.log.lock().expect("lock").heartbeats.last().map(|b| b.payload.clone());
            if last.and_then(|b| Heartbeat::decode(&b).ok()).is_some_and(|b| b.tiles_done >= processed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.observer.log.lock().expect("lock");
        report.check("heartbeats", heartbeats_verdict(&log.heartbeats, worker_id, processed));
    }
}

fn heartbeats_verdict(beats: &[observe::Seen], worker_id: &str, processed: u64) -> Result<String, String> {
    if beats.len() < 3 {
        return Err(format!(
            "{} heartbeats; send one every TILEPIPE_HEARTBEAT_SECS ({HEARTBEAT_SECS} s here)",
            beats.len()
        ));
    }
    let mut decoded = Vec::new();
    for beat in beats {
        let b = Heartbeat::decode(&beat.payload).map_err(|e| format!("a heartbeat cannot be read: {e}"))?;
        if beat.key.as_deref() != Some(worker_id) || b.worker_id != worker_id {
            return Err(format!(
                "a heartbeat of {:?} keyed {:?}; both must be TILEPIPE_WORKER_ID",
                b.worker_id, beat.key
            ));
        }
        if b.current_tile.as_deref().is_some_and(|t| TileKey::parse(t).is_none()) {
            return Err(format!("current_tile {:?} is not <job id>/<tile>", b.current_tile));
        }
        if (b.sent_at_ms - plumbing::now_ms()).abs() > 60_000 {
            return Err(format!("sent_at_ms {} is not milliseconds since the epoch by a set clock", b.sent_at_ms));
        }
        decoded.push(b);
    }
    let gap = beats.windows(2).map(|w| w[1].at - w[0].at).max().unwrap_or_default();
    if gap > Duration::from_secs(3 * HEARTBEAT_SECS) {
        return Err(format!(
            "{:.1} s between two heartbeats; every {HEARTBEAT_SECS} s was asked (keep sending while a tile is processed)",
            gap.as_secs_f64()
        ));
    }
    if decoded.windows(2).any(|w| w[1].tiles_done < w[0].tiles_done) {
        return Err("tiles_done went down".into());
    }
    let done = decoded.last().map_or(0, |b| b.tiles_done);
    if done < processed {
        return Err(format!("the last heartbeat says tiles_done {done}; {processed} results were sent"));
    }
    Ok(format!("{} received, at most {:.1} s apart, tiles_done {done}", beats.len(), gap.as_secs_f64()))
}

/// Samples the workers' group's committed offsets through the run: a task
/// may be committed only once its reply is on the broker.
struct CommitWatch {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl CommitWatch {
    fn start(offsets: Arc<Offsets>, session: &Session) -> Self {
        let stop = CancellationToken::new();
        let (stopped, sent, log) = (stop.clone(), Arc::clone(&session.sent), Arc::clone(&session.observer.log));
        let task = tokio::spawn(async move {
            let (mut samples, mut violations) = (0, Vec::new());
            while !stopped.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let o = Arc::clone(&offsets);
                // Committed first, then the replies' ends: every reply made
                // before the commit lies below those ends.
                let Ok(Ok((committed, ends))) =
                    tokio::task::spawn_blocking(move || Ok::<_, anyhow::Error>((o.committed()?, o.reply_ends()?)))
                        .await
                else {
                    continue;
                };
                let start = Instant::now();
                let caught_up = loop {
                    let read = log.lock().expect("lock").has_read(&ends);
                    if read || start.elapsed() > Duration::from_secs(5) {
                        break read;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                if !caught_up {
                    continue;
                }
                samples += 1;
                let sent = sent.lock().expect("lock");
                let log = log.lock().expect("lock");
                for s in sent.iter().filter(|s| s.offset < committed[s.partition as usize]) {
                    if !verdict::answered(&s.case, s.nth, &log.results, &log.dead_letters) {
                        let problem = format!("offset {} ({}) was committed before its reply", s.offset, s.case.name);
                        if !violations.contains(&problem) {
                            violations.push(problem);
                        }
                    }
                }
            }
            (samples, violations)
        });
        CommitWatch { stop, task }
    }

    async fn stop_and_judge(self, report: &mut Report) {
        self.stop.cancel();
        let (samples, violations) = self.task.await.unwrap_or_default();
        report.check(
            "commits a task only after its reply is acknowledged",
            match violations.as_slice() {
                [] if samples == 0 => Err("the group's offsets could not be sampled".into()),
                [] => Ok(format!("{samples} samples of the group's offsets")),
                [first, ..] => Err(format!(
                    "{} tasks, e.g. {first}; store an offset only once the broker acknowledged the reply",
                    violations.len()
                )),
            },
        );
    }
}

/// Every task, answered or skipped, ends up committed (auto-commit runs
/// every 5 s by default).
async fn judge_final_commits(offsets: &Arc<Offsets>, report: &mut Report) {
    let start = Instant::now();
    let verdict = loop {
        let o = Arc::clone(offsets);
        let read = tokio::task::spawn_blocking(move || Ok::<_, anyhow::Error>((o.committed()?, o.task_ends()?))).await;
        if let Ok(Ok((committed, ends))) = &read {
            if committed == ends {
                break Ok(format!("every task committed {:.1} s after the last reply", start.elapsed().as_secs_f64()));
            }
            if start.elapsed() > Duration::from_secs(15) {
                break Err(format!(
                    "committed {committed:?} of {ends:?} per partition 15 s after the last reply; commit skipped, failed and dead-lettered tasks too"
                ));
            }
        } else if start.elapsed() > Duration::from_secs(15) {
            break Err("the group's offsets could not be read".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    report.check("commits every task it took", verdict);
}
