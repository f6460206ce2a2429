//! 250 means durable: 8 clients send over SMTP while the daemon is killed with SIGKILL;
//! after a restart, every queue id a client saw in a `250 … queued as ID` is queued, and
//! nothing is listed twice.

use crate::common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, wait_for};
use ferrymail::control::{Request, Response, client};

fn smtp_port(env: &Env) -> String {
    match client::request(
        &env.control_socket(),
        &Request::Status,
        Duration::from_secs(5),
    ) {
        Ok(Response::Status(s)) => s.listeners[0].clone(),
        other => panic!("status: {other:?}"),
    }
}

/// Reads one reply; returns its last line, or `None` on a closed or broken connection.
fn reply(r: &mut BufReader<TcpStream>) -> Option<String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(line.trim_end().to_owned());
        }
    }
}

/// Sends messages until `stop` or an error; records the ids acknowledged with 250.
fn client_loop(addr: &str, n: usize, stop: &AtomicBool, acked: &Mutex<Vec<String>>) {
    let Ok(stream) = TcpStream::connect(addr) else {
        return;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut send = |line: &str, r: &mut BufReader<TcpStream>| -> Option<String> {
        w.write_all(line.as_bytes()).ok()?;
        reply(r)
    };
    if reply(&mut r).is_none() || send("EHLO c.example\r\n", &mut r).is_none() {
        return;
    }
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let ok = (|| {
            send("MAIL FROM:<a@c.example>\r\n", &mut r)?
                .starts_with("250")
                .then_some(())?;
            send("RCPT TO:<b@example.net>\r\n", &mut r)?
                .starts_with("250")
                .then_some(())?;
            send("DATA\r\n", &mut r)?.starts_with("354").then_some(())?;
            let body = format!(
                "Subject: client {n} message {i}\r\n\r\n{}.\r\n",
                format!("{}\r\n", "x".repeat(98)).repeat(20)
            );
            send(&body, &mut r)
        })();
        let Some(last) = ok else { return };
        if let Some(id) = last.strip_prefix("250 2.0.0 Ok: queued as ") {
            acked.lock().unwrap().push(id.to_owned());
        } else {
            return;
        }
        i += 1;
    }
}

#[test]
fn every_250_survives_a_sigkill() {
    let env = Env::new();
    let mut daemon = env.start_daemon();
    let addr = smtp_port(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|n| {
            let (addr, stop, acked) = (addr.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || client_loop(&addr, n, &stop, &acked))
        })
        .collect();
    assert!(
        wait_for(Duration::from_secs(30), || acked.lock().unwrap().len()
            >= 200),
        "clients too slow"
    );
    daemon.kill9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();

    let daemon = env.start_daemon();
    let listed: Vec<String> = env
        .queued()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "a message listed twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    // Anything beyond the acknowledged ones was committed but its 250 was lost in the kill
    // (the RFC 1047 window): at most one per client.
    assert!(
        listed.len() <= acked.len() + 8,
        "{} listed, {} acknowledged",
        listed.len(),
        acked.len()
    );
    daemon.stop();
}
