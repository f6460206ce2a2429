//! Link awareness end to end, with the real daemon and a scripted upstream: an
//! upstream that is down keeps the mail without counting attempts or online age, and
//! gets everything within a probe interval of coming back, over one connection; manual
//! mode moves nothing until `flush --wait`; the trigger file flushes; a schedule outside
//! its window sends nothing, and `every` sends; SIGUSR1 flushes; a trigger file saying
//! `down` closes the gate at once; ETRN releases a hub's held mail to an
//! allowed client only, and an edge sends ETRN by itself when its link comes up.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::{Env, free_port, wait_for};

/// An edge relaying through 127.0.0.1:`port`, probing every second; `link` adds keys
/// to its `[link]` section, `extra` whole sections.
fn edge(port: u16, link: &str, extra: &str) -> Env {
    Env::with_config(&format!(
        "[upstream]\nsmarthost = \"127.0.0.1:{port}\"\ntls = \"none\"\n[link]\nprobe_interval = \"1s\"\n{link}\n{extra}"
    ))
}

fn recipients(env: &Env) -> Vec<serde_json::Value> {
    env.queued()
        .iter()
        .flat_map(|e| e["recipients"].as_array().unwrap().clone())
        .collect()
}

fn send(env: &Env, n: usize) {
    for i in 0..n {
        let out = env.send(
            &["bob@far.example"],
            format!("Subject: {i}\n\nx\n").as_bytes(),
        );
        assert!(out.status.success());
    }
}

#[test]
fn an_upstream_that_comes_back_gets_everything_within_a_probe_interval() {
    let port = free_port();
    let edge = edge(port, "", "");
    let daemon = edge.start_daemon();
    send(&edge, 3);
    assert!(wait_for(Duration::from_secs(20), || {
        let r = recipients(&edge);
        r.len() == 3
            && r.iter().all(|r| {
                r["last_reply"]
                    .as_str()
                    .is_some_and(|s| s.contains("refused"))
            })
    }));
    // Down for a while: kept, no attempt counted, no online age.
    std::thread::sleep(Duration::from_secs(3));
    for r in recipients(&edge) {
        assert_eq!(r["attempts"], 0, "{r}");
        assert_eq!(r["online_age"], 0, "{r}");
        assert_eq!(r["link_wait"], true, "{r}");
        assert_ne!(r["state"], "bounced");
    }
    let listing = edge.run(&["queue"], b"");
    assert!(String::from_utf8_lossy(&listing.stdout).contains("waiting for the link"));
    let status = edge.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let route = &status["routes"][0];
    assert_eq!(
        (route["route"].as_str(), route["state"].as_str()),
        (Some("upstream"), Some("down")),
        "{status}"
    );
    let next = route["next_probe_at"]
        .as_i64()
        .expect("a down link says its next probe");
    assert!(
        next <= ferrymail::spool::now_unix() + 2,
        "probe_interval is 1s: {status}"
    );
    let text = edge.run(&["status"], b"");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("waiting for the link; next probe in"),
        "{text}"
    );

    let upstream = Upstream::accepting(&format!("127.0.0.1:{port}"));
    let back = Instant::now();
    assert!(
        wait_for(Duration::from_secs(3), || upstream.received().len() == 3),
        "not delivered within probe_interval + 2 s of the upstream coming back"
    );
    eprintln!(
        "delivered {:?} after the upstream came back",
        back.elapsed()
    );
    assert_eq!(
        upstream.sessions(),
        1,
        "one SMTP session carried the backlog"
    );
    assert!(wait_for(Duration::from_secs(5), || edge
        .queued()
        .is_empty()));
    daemon.stop();
}

#[test]
fn manual_mode_moves_nothing_until_flush_wait_delivers_everything() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let edge = edge(upstream.addr.port(), "mode = \"manual\"", "");
    let daemon = edge.start_daemon();
    send(&edge, 2);
    assert!(wait_for(Duration::from_secs(20), || recipients(&edge)
        .len()
        == 2));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        upstream.received().is_empty(),
        "manual mode sent mail unasked"
    );
    assert!(
        recipients(&edge).iter().all(|r| r["last_reply"]
            .as_str()
            .is_some_and(|s| s.contains("manual"))),
        "{:?}",
        recipients(&edge)
    );
    let out = edge.run(&["flush", "--wait"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("everything due was delivered"));
    assert_eq!(upstream.received().len(), 2);
    assert!(edge.queued().is_empty());
    // The run ends once nothing is due: new mail waits again.
    std::thread::sleep(Duration::from_secs(1));
    send(&edge, 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(upstream.received().len(), 2);
    let out = edge.run(&["flush", "--wait", "--json"], b"");
    assert!(out.status.success());
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (result["delivered"].as_u64(), result["waiting"].as_i64()),
        (Some(1), Some(0)),
        "{result}"
    );
    assert_eq!(upstream.received().len(), 3);
    daemon.stop();
}

#[test]
fn touching_the_trigger_file_flushes() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("run/flush");
    let edge = edge(
        upstream.addr.port(),
        &format!(
            "mode = \"manual\"\ntrigger_file = \"{}\"",
            trigger.display()
        ),
        "",
    );
    let daemon = edge.start_daemon();
    send(&edge, 1);
    assert!(wait_for(Duration::from_secs(20), || recipients(&edge)
        .len()
        == 1));
    std::thread::sleep(Duration::from_secs(1));
    assert!(upstream.received().is_empty());
    std::fs::write(&trigger, b"").unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || upstream.received().len() == 1),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("trigger file"));
    daemon.stop();
}

#[test]
fn sigusr1_flushes() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let edge = edge(upstream.addr.port(), "mode = \"manual\"", "");
    let daemon = edge.start_daemon();
    send(&edge, 1);
    assert!(wait_for(Duration::from_secs(20), || recipients(&edge)
        .len()
        == 1));
    daemon.signal(libc::SIGUSR1);
    assert!(
        wait_for(Duration::from_secs(5), || upstream.received().len() == 1),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("SIGUSR1"));
    daemon.stop();
}

/// A hook writing `down` to the trigger file makes the gate probe at once: it closes
/// without waiting for a delivery to fail, and nothing is flushed.
#[test]
fn a_trigger_file_that_says_down_closes_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("flush");
    let upstream = Upstream::accepting("127.0.0.1:0");
    let port = upstream.addr.port();
    let edge = edge(
        port,
        // Routes known up are not probed on a timer: only the hint can close the gate.
        &format!("trigger_file = \"{}\"", trigger.display()),
        "",
    );
    let daemon = edge.start_daemon();
    let state = || {
        let out = edge.run(&["status", "--json"], b"");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["routes"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(wait_for(Duration::from_secs(10), || state() == "up"));
    drop(upstream); // the link goes: nothing listens any more
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(&trigger, b"down").unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || state() == "down"),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains(" flush why="),
        "a down hook is not a flush"
    );
    daemon.stop();
}

/// A window that is not open now: it starts two hours from now, local time.
fn closed_window() -> String {
    let now = jiff::ZonedDateTime::now();
    let start = (now.hour() as i32 + 2) % 24;
    let end = (start + 1) % 24;
    format!(
        "{start:02}:{:02}-{end:02}:{:02}",
        now.minute(),
        now.minute()
    )
}

#[test]
fn a_schedule_sends_only_in_its_window_and_every_period() {
    let upstream = Upstream::accepting("127.0.0.1:0");
    let outside = edge(
        upstream.addr.port(),
        &format!("mode = \"schedule\"\nwindows = [\"{}\"]", closed_window()),
        "",
    );
    let daemon = outside.start_daemon();
    send(&outside, 1);
    assert!(wait_for(Duration::from_secs(20), || recipients(&outside)
        .len()
        == 1));
    std::thread::sleep(Duration::from_secs(3));
    assert!(upstream.received().is_empty(), "sent outside the window");
    let status = outside.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status["next_flush_at"].as_i64().unwrap() > ferrymail::spool::now_unix());
    daemon.stop();

    let every = edge(
        upstream.addr.port(),
        "mode = \"schedule\"\nevery = \"2s\"",
        "",
    );
    let daemon = every.start_daemon();
    send(&every, 2);
    assert!(
        wait_for(Duration::from_secs(8), || upstream.received().len() == 2),
        "every 2s sent nothing"
    );
    daemon.stop();
}

/// One SMTP exchange from `from` (a loopback address): the reply code to each line.
fn smtp(server: SocketAddr, from: &str, lines: &[&str]) -> Vec<u16> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&server.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut read_reply = || -> u16 {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line[..3].parse().unwrap();
            }
        }
    };
    assert_eq!(read_reply(), 220);
    lines
        .iter()
        .map(|l| {
            writer.write_all(format!("{l}\r\n").as_bytes()).unwrap();
            read_reply()
        })
        .collect()
}

/// A hub holding field.example's mail for a field station listening on `station`.
fn hub(port: u16, station: u16) -> Env {
    Env::with_config(&format!(
        "[[listen]]\naddr = \"127.0.0.1:{port}\"\n\
         [[route]]\ndomains = [\"field.example\"]\nvia = \"127.0.0.1:{station}\"\nhold = true\ntls = \"none\"\n\
         [etrn]\nallowed_networks = [\"127.0.0.1/32\"]\nopen_for = \"5m\"\n[link]\nprobe_interval = \"1s\"\n"
    ))
}

fn hub_listener(hub: &Env) -> SocketAddr {
    let status = hub.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    status["listeners"][0].as_str().unwrap().parse().unwrap()
}

#[test]
fn etrn_releases_held_mail_to_allowed_clients_only() {
    let station = Upstream::accepting("127.0.0.1:0");
    let hub = hub(free_port(), station.addr.port());
    let daemon = hub.start_daemon();
    let out = hub.send(&["bob@field.example"], b"Subject: held\n\nfor the field\n");
    assert!(out.status.success());
    assert!(wait_for(Duration::from_secs(20), || recipients(&hub)
        .first()
        .is_some_and(|r| r["state"] == "held")));
    let addr = hub_listener(&hub);
    assert_eq!(
        smtp(
            addr,
            "127.0.0.2",
            &["EHLO stranger.example", "ETRN field.example", "QUIT"]
        ),
        [250, 459, 221],
        "not in etrn.allowed_networks"
    );
    assert_eq!(
        smtp(
            addr,
            "127.0.0.1",
            &["EHLO field.example", "ETRN ;reboot", "ETRN #queue", "QUIT"]
        ),
        [250, 501, 501, 221]
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        station.received().is_empty(),
        "refused ETRNs released nothing"
    );
    assert_eq!(
        smtp(
            addr,
            "127.0.0.1",
            &["EHLO field.example", "ETRN field.example", "QUIT"]
        ),
        [250, 253, 221]
    );
    assert!(wait_for(Duration::from_secs(5), || station
        .received()
        .len()
        == 1));
    assert_eq!(station.received()[0].rcpts, ["bob@field.example"]);
    assert!(wait_for(Duration::from_secs(5), || hub.queued().is_empty()));
    let status = hub.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let open = &status["open_domains"][0];
    assert_eq!(open["domain"], "field.example", "{status}");
    let left = open["until"].as_i64().unwrap() - ferrymail::spool::now_unix();
    assert!(
        (240..=300).contains(&left),
        "open for etrn.open_for: {left}s left"
    );
    let text = hub.run(&["status"], b"");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("open:      field.example"), "{text}");
    assert_eq!(
        smtp(
            addr,
            "127.0.0.1",
            &["EHLO field.example", "ETRN field.example", "QUIT"]
        ),
        [250, 251, 221],
        "nothing waiting"
    );
    daemon.stop();
}

#[test]
fn an_edge_sends_etrn_when_its_link_comes_up() {
    let station = Upstream::accepting("127.0.0.1:0");
    let hub_port = free_port();
    let hub = hub(hub_port, station.addr.port());
    let hub_daemon = hub.start_daemon();
    let out = hub.send(&["bob@field.example"], b"Subject: held\n\nfor the field\n");
    assert!(out.status.success());
    assert!(wait_for(Duration::from_secs(20), || recipients(&hub)
        .first()
        .is_some_and(|r| r["state"] == "held")));
    // The edge's own LAN relay is up too, and hears no ETRN: that is for the smarthost.
    let lan = Upstream::accepting("127.0.0.1:0");
    let edge = edge(
        hub_port,
        "etrn = [\"field.example\"]",
        &format!(
            "[[route]]\ndomains = [\"lan.example\"]\nvia = \"127.0.0.1:{}\"\ntls = \"none\"\n",
            lan.addr.port()
        ),
    );
    let edge_daemon = edge.start_daemon();
    assert!(
        wait_for(Duration::from_secs(10), || station.received().len() == 1),
        "edge log:\n{}\nhub log:\n{}",
        edge_daemon.log(),
        hub_daemon.log()
    );
    assert!(
        edge_daemon.log().contains("ETRN accepted"),
        "{}",
        edge_daemon.log()
    );
    assert!(wait_for(Duration::from_secs(10), || {
        let status = edge.run(&["status", "--json"], b"");
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        status["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["route"] == "lan.example" && r["state"] == "up")
    }));
    assert_eq!(lan.etrns(), Vec::<String>::new(), "{}", edge_daemon.log());
    edge_daemon.stop();
    hub_daemon.stop();
}

/// A field station: the satellite (the smarthost) on a schedule whose window is shut,
/// and the LAN mailbox server next to it on its own `[route.link]`, always on: LAN mail
/// leaves at once, the rest waits for the window. `status` shows each route's mode.
#[test]
fn a_route_with_its_own_link_settings_does_not_wait_for_the_schedule() {
    let satellite = Upstream::accepting("127.0.0.1:0");
    let lan = Upstream::accepting("127.0.0.1:0");
    let station = edge(
        satellite.addr.port(),
        &format!("mode = \"schedule\"\nwindows = [\"{}\"]", closed_window()),
        &format!(
            "[[route]]\nname = \"store\"\ndomains = [\"field.example\"]\nvia = \"127.0.0.1:{}\"\ntls = \"none\"\n\
             [route.link]\nmode = \"auto\"\nprobe_interval = \"1s\"\n",
            lan.addr.port()
        ),
    );
    let daemon = station.start_daemon();
    for to in ["alice@field.example", "bob@far.example"] {
        assert!(station.send(&[to], b"Subject: hi\n\nx\n").status.success());
    }
    assert!(
        wait_for(Duration::from_secs(10), || lan.received().len() == 1),
        "{}",
        daemon.log()
    );
    assert_eq!(lan.received()[0].rcpts, ["alice@field.example"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(satellite.received().is_empty(), "sent outside the window");
    let waiting = recipients(&station);
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["address"], "bob@far.example");
    let status = station.run(&["status"], b"");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("route:     store → 127.0.0.1"), "{status}");
    assert!(
        status.contains("(auto)") && status.contains("(schedule)"),
        "{status}"
    );
    assert!(status.contains("outside its delivery windows"), "{status}");
    assert!(!status.contains("route["), "routes are named: {status}");
    let json = station.run(&["status", "--json"], b"");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["recipients"]["queued"], 1, "counts by state: {json}");
    assert!(
        daemon.log().contains("spool opened: a new spool"),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("ferrymail::"),
        "module paths in the log"
    );
    daemon.stop();
}
