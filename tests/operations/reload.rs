//! SIGHUP reloads the configuration in place, with a real signal, on a daemon without
//! `[tls]`: the daemon lives on; new routes and link modes take the waiting mail; new
//! accept rules hold for new SMTP sessions; a file that does not parse, or names a
//! password file that is not there, changes nothing; a changed listener waits for a
//! restart and says so.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::upstream::Upstream;
use common::{Daemon, Env, wait_for};
use ferrymail::control::{Request, Response, client};

fn config(env: &Env, body: &str) {
    std::fs::write(
        &env.config,
        format!(
            "hostname = \"edge.test\"\nspool = \"{}\"\n{}[[listen]]\naddr = \"127.0.0.1:0\"\n{body}",
            env.spool.display(),
            common::NO_DNS
        ),
    )
    .unwrap();
}

fn alive(env: &Env) -> bool {
    matches!(
        client::request(
            &env.control_socket(),
            &Request::Ping,
            Duration::from_secs(5)
        ),
        Ok(Response::Pong { .. })
    )
}

/// Sends SIGHUP and waits for the daemon's verdict in its log.
fn hup(daemon: &Daemon, env: &Env, verdict: &str) {
    let before = daemon.log().matches(verdict).count();
    daemon.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(15), || daemon
            .log()
            .matches(verdict)
            .count()
            > before),
        "no {verdict:?} after SIGHUP:\n{}",
        daemon.log()
    );
    assert!(alive(env), "the daemon died of SIGHUP:\n{}", daemon.log());
}

/// The SIZE the listener announces in EHLO.
fn announced_size(env: &Env) -> String {
    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let addr = status["listeners"][0].as_str().unwrap().to_owned();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    writer.write_all(b"EHLO test.example\r\n").unwrap();
    let mut size = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(s) = line.trim_end().strip_prefix("250-SIZE ") {
            size = s.to_owned();
        }
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    let _ = writer.write_all(b"QUIT\r\n");
    size
}

#[test]
fn sighup_reloads_routes_link_and_accept_rules_and_refuses_what_cannot_run() {
    let first = Upstream::accepting("127.0.0.1:0");
    let second = Upstream::accepting("127.0.0.1:0");
    let env = Env::new();
    let relay =
        |port: u16| format!("[upstream]\nsmarthost = \"127.0.0.1:{port}\"\ntls = \"none\"\n");
    config(
        &env,
        &format!(
            "{}[accept]\nmax_message_size = \"1MiB\"\n[link]\nmode = \"manual\"\nprobe_interval = \"1s\"\n",
            relay(first.addr.port())
        ),
    );
    let daemon = env.start_daemon();
    assert!(
        env.send(&["bob@far.example"], b"Subject: waits\n\nx\n")
            .status
            .success()
    );
    assert!(wait_for(Duration::from_secs(10), || env.queued().len() == 1));
    assert_eq!(announced_size(&env), "1048576");

    // Unchanged file: reloaded, nothing moves.
    hup(&daemon, &env, "configuration reloaded");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(env.queued().len(), 1, "manual mode still holds it");

    // A file that does not parse, then one naming a missing password file: refused whole.
    std::fs::write(&env.config, "this is [not toml").unwrap();
    hup(&daemon, &env, "configuration not reloaded");
    config(
        &env,
        &format!(
            "[upstream]\nsmarthost = \"127.0.0.1:{}\"\nusername = \"me\"\npassword_file = \"/nonexistent/secret\"\n",
            second.addr.port()
        ),
    );
    hup(&daemon, &env, "upstream.password_file /nonexistent/secret");
    std::thread::sleep(Duration::from_secs(2));
    assert!(second.received().is_empty() && first.received().is_empty());
    assert_eq!(announced_size(&env), "1048576", "the old rules stay");

    // A new smarthost in auto mode and new accept rules: the waiting mail goes there.
    config(
        &env,
        &format!(
            "{}[accept]\nmax_message_size = \"2MiB\"\n[link]\nprobe_interval = \"1s\"\n",
            relay(second.addr.port())
        ),
    );
    hup(&daemon, &env, "configuration reloaded");
    assert!(
        wait_for(Duration::from_secs(15), || second.received().len() == 1),
        "{}",
        daemon.log()
    );
    assert!(first.received().is_empty());
    assert_eq!(announced_size(&env), "2097152");

    // A listener change needs a restart: said, and the old listener stays.
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(&env.config, text).unwrap();
    hup(
        &daemon,
        &env,
        "listen changed; it takes effect at the next restart",
    );
    assert_eq!(announced_size(&env), "2097152");
    assert_eq!(daemon.stop(), Some(0));
}
