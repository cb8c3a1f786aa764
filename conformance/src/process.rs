//! The worker under test: a shell command in its own process group, with
//! its output kept in a file for the report.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

pub struct WorkerProcess {
    child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Runs `command` with `sh -c` and `env`, in a process group of its own
    /// so that a signal reaches the worker behind any wrapper.
    pub fn spawn(command: &str, env: &[(&str, String)], log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log).context("creating the worker's log file")?;
        let child = Command::new("sh")
            .args(["-c", command])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the worker: {command}"))?;
        Ok(WorkerProcess { child, log })
    }

    /// Whether the command is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (`TERM`, `KILL`) to the whole process group.
    fn signal(&self, signal: &str) -> bool {
        let group = format!("-{}", self.child.id());
        Command::new("kill")
            .args([&format!("-{signal}"), "--", &group])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGTERM, then waits up to `grace` for every process of the group to
    /// exit. Returns how long they took, or `None` if they had to be killed.
    pub async fn terminate(&mut self, grace: Duration) -> Option<Duration> {
        let start = Instant::now();
        self.signal("TERM");
        while start.elapsed() < grace {
            let _ = self.child.try_wait();
            if !self.signal("0") {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        None
    }

    pub fn kill(&mut self) {
        self.signal("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `lines` lines the worker printed.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.signal("0") {
            self.kill();
        }
    }
}
