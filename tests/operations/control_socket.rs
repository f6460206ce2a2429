//! The control socket is open to every local user, so it is bounded: a user holding
//! over a thousand idle connections gets a few, is told "too many" for the rest, and
//! neither SMTP clients nor root's `status` notice; an idle connection is closed; a
//! huge request line from an unprivileged user and a malformed domain are refused with
//! one line. The flood runs as `nobody` (needs root; "skipped" otherwise).

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, wait_for};
use ferrymail::control::{Request, Response, client};

/// As `nobody`: opens `n` connections to `socket` and prints how many were refused,
/// keeps the first eight until a line arrives on stdin, then sends one huge request
/// and prints its reply.
const FLOOD: &str = r#"
import resource, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    held.append(s)
time.sleep(1)
refused = 0
for s in held:
    s.setblocking(False)
    try:
        if b"too many control connections" in s.recv(4096):
            refused += 1
    except BlockingIOError:
        pass
print(refused, flush=True)
for s in held[8:]:
    s.close()
sys.stdin.readline()
for s in held[:8]:
    s.close()
time.sleep(0.5)
big = socket.socket(socket.AF_UNIX)
big.connect(path)
try:
    big.sendall(b'{"op":"flush","domain":"' + b"a" * 900000 + b'"}\n')
except OSError:
    pass
print(big.makefile().readline().strip(), flush=True)
time.sleep(600)
"#;

#[test]
fn a_local_user_cannot_take_the_control_socket_or_the_daemons_descriptors() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let daemon = env.start_daemon();
    let socket = env.control_socket();
    let idle = UnixStream::connect(&socket).unwrap();
    let idle_since = Instant::now();

    let mut flood = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            FLOOD,
        ])
        .arg(&socket)
        .arg("1100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(flood.stdout.take().unwrap()).lines();
    let refused: usize = lines
        .next()
        .expect("the flood reports")
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 1100 - 8, "only {refused} of 1100 were refused");

    // Root is not locked out, and SMTP clients get their banner.
    let reply = client::request(&socket, &Request::Status, Duration::from_secs(10));
    assert!(matches!(reply, Ok(Response::Status(_))), "{reply:?}");
    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let addr = status["listeners"][0].as_str().unwrap().to_owned();
    let smtp = std::net::TcpStream::connect(addr).unwrap();
    smtp.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut banner = String::new();
    BufReader::new(smtp).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("220 "), "{banner:?}");

    // A malformed domain is refused by name.
    let reply = client::request(
        &socket,
        &Request::Flush {
            domain: Some("a..b".into()),
        },
        Duration::from_secs(10),
    );
    assert!(
        matches!(&reply, Ok(Response::Error { message, .. }) if message.contains("\"a..b\" is not a domain")),
        "{reply:?}"
    );

    // Released, its slots take a request again: a huge line is refused, not read.
    writeln!(flood.stdin.as_mut().unwrap()).unwrap();
    let big = lines.next().expect("the flood's huge request").unwrap();
    assert!(big.contains("request line longer than 4096 bytes"), "{big}");

    // The idle connection is closed after its 30 seconds.
    let mut idle = idle;
    idle.set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    let mut byte = [0u8; 1];
    let n = idle.read(&mut byte).unwrap_or(1);
    assert_eq!(n, 0, "the idle connection was not closed");
    assert!(idle_since.elapsed() < Duration::from_secs(45));

    let _ = flood.kill();
    let _ = flood.wait();
    assert!(wait_for(Duration::from_secs(10), || {
        matches!(
            client::request(&socket, &Request::Ping, Duration::from_secs(2)),
            Ok(Response::Pong { .. })
        )
    }));
    daemon.stop();
}
