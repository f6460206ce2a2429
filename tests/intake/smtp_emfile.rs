//! Out of file descriptors: the daemon runs with RLIMIT_NOFILE = 64 and a client opens far
//! more connections than it can accept. The accept loop backs off instead of spinning or
//! dying, and once the connections close the daemon greets new clients again.

use crate::common;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use common::{Env, wait_for};
use ferrymail::control::{Request, Response, client};

#[test]
fn accept_backs_off_when_descriptors_run_out_and_recovers() {
    let env = Env::new();
    let log = env.dir.path().join("emfile.log");
    let mut cmd = env.cmd(&["serve"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let socket = env.control_socket();
    let status = || client::request(&socket, &Request::Status, Duration::from_secs(2));
    assert!(
        wait_for(Duration::from_secs(20), || status().is_ok()),
        "daemon did not start"
    );
    let Ok(Response::Status(s)) = status() else {
        panic!()
    };
    let addr = s.listeners[0].clone();

    let flood: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(flood.len() > 64, "the flood did not happen");
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("accept failed; backing off")),
        "no back-off logged"
    );
    assert!(child.try_wait().unwrap().is_none(), "the daemon died");
    drop(flood);

    let greeted = wait_for(Duration::from_secs(20), || {
        let Ok(mut c) = TcpStream::connect(&addr) else {
            return false;
        };
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        matches!(c.read(&mut buf), Ok(n) if n >= 3 && &buf[..3] == b"220")
    });
    assert!(greeted, "no greeting after the flood");
    // SAFETY: our own child, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(wait_for(Duration::from_secs(20), || child
        .try_wait()
        .unwrap()
        .is_some()));
}
