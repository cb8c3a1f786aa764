//! A throwaway nisshi broker on a free loopback port, with SQLite storage in
//! a temporary directory: what the kit (and tilepipe's own tests) run
//! against when no broker is given.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Child,
    pub addr: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts `nisshi` from `PATH` and waits until it listens.
    ///
    /// # Panics
    /// If nisshi is missing or does not listen within 30 s.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let child = spawn(&dir, port);
        Self { child, addr: format!("127.0.0.1:{port}"), port, dir }
    }

    /// Kills the broker and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.dir, self.port);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("a local address").port()
}

fn spawn(dir: &tempfile::TempDir, port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    // `mode=direct`: reads beside the writer (see docs/performance.md).
    let child = Command::new("nisshi")
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "sqlite://broker.db?mode=direct", "--group-initial-rebalance-delay", "300ms"])
        .arg("--silent")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("nisshi must be on PATH (scripts/setup.sh installs it)");
    wait_for_port(port, "nisshi");
    child
}

/// # Panics
/// If nothing listens on `port` within 30 s.
pub fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
