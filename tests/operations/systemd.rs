//! systemd integration: with `$NOTIFY_SOCKET` set, the daemon sends `READY=1` once its
//! listeners accept connections, a `STATUS=` line with its gates and queue, `WATCHDOG=1`
//! as often as `$WATCHDOG_USEC` asks, and `STOPPING=1` at shutdown. `--log-format json`
//! writes one JSON object a line, for journald and log shippers.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::Env;

fn next(socket: &UnixDatagram, deadline: Instant) -> Option<String> {
    let left = deadline.checked_duration_since(Instant::now())?;
    socket
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_status_watchdog_and_stopping_reach_systemd() {
    let env = Env::new();
    let path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let daemon = env.start_daemon_with(&[
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = next(&socket, deadline).expect("a notification");
    assert!(first.contains("READY=1"), "{first}");
    assert!(
        first.contains("STATUS=") && first.contains("queue empty"),
        "{first}"
    );
    // Ready means listening: the SMTP listener answers now.
    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let addr = status["listeners"][0].as_str().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    // WATCHDOG_USEC=2s: a ping at least every second.
    let mut pings = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while let Some(m) = next(&socket, until) {
        pings += usize::from(m.contains("WATCHDOG=1"));
    }
    assert!(pings >= 2, "{pings} watchdog pings in 4 s");
    daemon.stop();
    let mut stopping = false;
    while let Some(m) = next(&socket, Instant::now() + Duration::from_millis(500)) {
        stopping |= m.contains("STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1 at shutdown");
}

#[test]
fn json_logs_are_one_object_a_line() {
    let env = Env::new();
    let log = env.dir.path().join("json.log");
    let mut child = env
        .cmd(&["serve", "--log-format", "json"])
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = common::wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("ferrymail ready"))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ready,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}
