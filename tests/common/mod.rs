//! Harness for black-box tests: a temporary spool and config file, the real binary, and
//! a daemon started and stopped by its pid. Waits are bounded polls, never open-ended.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferrymail::control::{Request, Response, client};

pub mod listener;
pub mod upstream;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrymail");

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub spool: PathBuf,
}

/// A resolver address where nothing answers: MX lookups fail fast as "DNS unreachable",
/// so no test ever asks the machine's resolver about the internet.
pub const NO_DNS: &str = "[dns]\nservers = [\"127.0.0.1:1\"]\n";

impl Env {
    /// A daemon that delivers nothing until flushed (`link.mode = "manual"`): mail
    /// stays in the queue for the test to look at.
    pub fn new() -> Env {
        Env::with_config("[link]\nmode = \"manual\"\n")
    }

    /// A spool in a fresh directory, plus `extra` TOML appended to the config (and
    /// `NO_DNS` unless `extra` has its own `[dns]`).
    pub fn with_config(extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let config = dir.path().join("ferrymail.toml");
        std::fs::write(
            &config,
            format!(
                "hostname = \"edge.test\"\nspool = \"{}\"\n{extra}\n{}[[listen]]\naddr = \"127.0.0.1:0\"\n",
                spool.display(),
                if extra.contains("[dns]") { "" } else { NO_DNS }
            ),
        )
        .unwrap();
        Env { dir, config, spool }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("FERRYMAIL_CONFIG")
            .env("FERRYMAIL_LOG", "info");
        cmd
    }

    /// Runs `ferrymail ARGS` with `stdin`, waiting at most 60 s.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_input(self.cmd(args), stdin)
    }

    /// `ferrymail send ARGS` with the message on stdin.
    pub fn send(&self, args: &[&str], message: &[u8]) -> Output {
        let mut all = vec!["send"];
        all.extend_from_slice(args);
        self.run(&all, message)
    }

    pub fn queue_json(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["queue", "--json"], b"");
        assert!(
            out.status.success(),
            "queue --json: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("queue --json prints JSON")
    }

    /// Entries already in the queue proper (not waiting in the maildrop).
    pub fn queued(&self) -> Vec<serde_json::Value> {
        self.queue_json()
            .into_iter()
            .filter(|e| e["location"] == "queue")
            .collect()
    }

    pub fn files_in(&self, sub: &str) -> Vec<String> {
        match std::fs::read_dir(self.spool.join(sub)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn control_socket(&self) -> PathBuf {
        self.spool.join("control.sock")
    }

    /// Starts `ferrymail serve` and waits until its control socket answers.
    pub fn start_daemon(&self) -> Daemon {
        self.start_daemon_with(&[])
    }

    /// `start_daemon` with extra environment variables.
    pub fn start_daemon_with(&self, envs: &[(&str, &str)]) -> Daemon {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let child = self
            .cmd(&["serve"])
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child: Some(child),
            log,
        };
        let socket = self.control_socket();
        let up = wait_for(Duration::from_secs(20), || {
            matches!(
                client::request(&socket, &Request::Ping, Duration::from_secs(2)),
                Ok(Response::Pong { .. })
            )
        });
        if !up {
            let log = daemon.log();
            daemon.kill9();
            panic!("daemon did not come up; log:\n{log}");
        }
        daemon
    }
}

pub fn run_with_input(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    // Drain stdout and stderr while waiting, so a long listing cannot fill the pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("command did not finish within 60 s: {cmd:?}");
        }
    }
}

/// A loopback port nobody listens on (just now), which nothing else in this binary will
/// be given while the test runs. A test may leave its port unbound for a while (an
/// upstream that is down); a port the kernel picks (a daemon's listener on port 0, an
/// outgoing connection) could then be that one, and another test's daemon would answer
/// for the missing upstream. So the ports come from below the kernel's ephemeral range,
/// which it never picks from, each given once.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000u32, ephemeral_low.saturating_sub(10_000));
    if span < 2_000 {
        // An unusual range: take the kernel's choice.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        return l.local_addr().unwrap().port();
    }
    // Test binaries of one run go one after another; a start that differs per process
    // keeps two runs at once apart too.
    let start = std::process::id() * 97 % span;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < span, "no free port left below {ephemeral_low}");
        let port = (low + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The `marker-N` line of each message body (see `fill_maildrop`).
pub fn markers<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    bodies
        .into_iter()
        .map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .find(|l| l.starts_with("marker-"))
                .expect("a marker line")
                .to_owned()
        })
        .collect()
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        signal(child.id(), libc::SIGTERM);
        let exited = wait_for(Duration::from_secs(20), || {
            child.try_wait().unwrap().is_some()
        });
        if !exited {
            let _ = child.kill();
            panic!("daemon ignored SIGTERM; log:\n{}", self.log());
        }
        child.wait().unwrap().code()
    }

    /// Sends `sig` (e.g. `libc::SIGUSR1`) to the daemon.
    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A plain test message with a subject, LF line endings like most local programs.
pub fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: tester@edge.test\nTo: rcpt@example.net\nSubject: {subject}\n\nbody of {subject}\n"
    )
    .into_bytes()
}

/// The stored bytes of every queued message, by id (read through the library).
pub fn stored_messages(spool: &Path) -> Vec<(String, Vec<u8>)> {
    use ferrymail::spool::envelope::{read_body, read_stored};
    let layout = ferrymail::spool::Layout::new(spool);
    let fs = ferrymail::spool::RealFs;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&layout.queue).unwrap() {
        let path = entry.unwrap().path();
        let stored = read_stored(&fs, &path).unwrap();
        out.push((
            stored.envelope.id.to_string(),
            read_body(&fs, &path, &stored).unwrap(),
        ));
    }
    out
}

/// Writes `n` drops to `rcpt` straight into the maildrop, as `send` would, each with a
/// `marker-N` line to recognise it by.
pub fn fill_maildrop(env: &Env, n: usize, rcpt: &str) {
    use ferrymail::spool::maildrop::{DropEnvelope, DropWriter};
    let layout = ferrymail::spool::Layout::new(&env.spool);
    std::fs::create_dir_all(&layout.maildrop_tmp).unwrap();
    std::fs::create_dir_all(&layout.maildrop_new).unwrap();
    for i in 0..n {
        let envelope = DropEnvelope {
            sender: ferrymail::smtp::ReversePath::parse("me@home.test").unwrap(),
            recipients: vec![ferrymail::spool::Recipient::parse(rcpt).unwrap()],
            envid: None,
            ret: None,
            submitted_at: 1_800_000_000,
        };
        let mut drop = DropWriter::create(&ferrymail::spool::RealFs, &layout, &envelope).unwrap();
        drop.write_all(format!("Subject: drop {i}\r\n\r\nmarker-{i}\r\n").as_bytes())
            .unwrap();
        drop.finish().unwrap();
    }
}

/// Says each line and expects each reply code, over one SMTP connection to `addr`.
pub fn smtp_session(addr: &str, script: &[(&str, &str)]) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "wanted {code}: {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect("220");
    for (line, code) in script {
        write!(writer, "{line}\r\n").unwrap();
        expect(code);
    }
}
