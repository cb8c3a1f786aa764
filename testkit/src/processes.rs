//! Real processes and the broker: nisshi per test, and the server and
//! worker binaries, so a test can kill them for real.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Api, eventually, free_port, wait_for_port};

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
