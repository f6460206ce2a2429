//! The ODMR hub (RFC 2645): a station authenticates over an `odmr` listener, says ATRN,
//! and takes its held mail over the same connection, per-recipient outcomes recorded;
//! and the ways a station or a stranger can get it wrong. The station here is the test
//! itself (a CRAM-MD5 client, then a scripted SMTP server on the turned socket);
//! `tests/interop/odmr.sh` runs fetchmail's ODMR client against the hub.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::upstream::serve_turned;
use common::{Env, wait_for};
use ferrymail::smtp::cram_md5::hmac_md5_hex;

const SECRET: &str = "station-secret";

/// A hub holding field.example's mail (and its subdomains') for the station `station`.
fn hub() -> Env {
    hub_with("")
}

fn hub_with(extra: &str) -> Env {
    let env = Env::with_config(&format!(
        "{extra}\n[[listen]]\naddr = \"127.0.0.1:0\"\nkind = \"odmr\"\nrequire_tls = false\n\
         [[route]]\ndomains = [\"field.example\", \".field.example\"]\nvia = \"odmr\"\n\
         [[route]]\ndomains = [\"other.example\"]\nvia = \"odmr\"\n\
         [[odmr_user]]\nname = \"station\"\npassword_file = \"station.secret\"\n\
         domains = [\"field.example\", \".field.example\"]\n\
         [[odmr_user]]\nname = \"other\"\npassword_file = \"station.secret\"\ndomains = [\"other.example\"]\n",
    ));
    let secret = env.dir.path().join("station.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    env
}

/// The hub's listeners: (smtp, odmr).
fn listeners(env: &Env) -> (String, String) {
    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let l = status["listeners"].as_array().unwrap();
    // The configuration names the odmr listener first.
    (
        l[1].as_str().unwrap().to_owned(),
        l[0].as_str().unwrap().to_owned(),
    )
}

struct Station {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Station {
    fn connect(addr: &str) -> Station {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut st = Station {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        st.reply();
        st
    }

    /// The last line of the next reply.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    }

    fn say(&mut self, line: &str) -> String {
        write!(self.writer, "{line}\r\n").unwrap();
        self.reply()
    }

    fn login(&mut self, user: &str) {
        assert!(self.say("EHLO station.example").starts_with("250"));
        let challenge = self.say("AUTH CRAM-MD5");
        assert!(challenge.starts_with("334 "), "{challenge}");
        let engine = base64::engine::general_purpose::STANDARD;
        let challenge = engine.decode(&challenge[4..]).unwrap();
        let digest = hmac_md5_hex(SECRET.as_bytes(), &challenge);
        let answer = engine.encode(format!("{user} {digest}"));
        let r = self.say(&answer);
        assert!(r.starts_with("235"), "{r}");
    }

    /// After 250 to ATRN: serves SMTP on the turned connection until QUIT.
    fn take_mail(self, rcpt: common::upstream::Rule) -> Vec<common::upstream::Received> {
        drop(self.reader);
        serve_turned(self.writer, rcpt)
    }
}

fn send_to_hub(env: &Env, smtp: &str, rcpts: &[&str], subject: &str) {
    let mut s = Station::connect(smtp);
    assert!(s.say("EHLO sender.example").starts_with("250"));
    assert!(
        s.say("MAIL FROM:<someone@elsewhere.example>")
            .starts_with("250")
    );
    for r in rcpts {
        let reply = s.say(&format!("RCPT TO:<{r}>"));
        assert!(reply.starts_with("250"), "{r}: {reply}");
    }
    assert!(s.say("DATA").starts_with("354"));
    let reply = s.say(&format!("Subject: {subject}\r\n\r\nfor the field\r\n."));
    assert!(reply.starts_with("250"), "{reply}");
    let _ = env;
}

fn held(env: &Env) -> usize {
    env.queued()
        .iter()
        .flat_map(|e| e["recipients"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["state"] == "held")
        .count()
}

#[test]
fn a_station_takes_its_held_mail_over_its_own_connection() {
    let metrics_port = common::free_port();
    let env = hub_with(&format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\""));
    let daemon = env.start_daemon();
    let (smtp, odmr) = listeners(&env);
    send_to_hub(
        &env,
        &smtp,
        &["a@field.example", "b@lab.field.example"],
        "one",
    );
    send_to_hub(
        &env,
        &smtp,
        &["gone@field.example", "c@field.example"],
        "two",
    );
    send_to_hub(&env, &smtp, &["x@other.example"], "not yours");
    assert!(
        wait_for(Duration::from_secs(10), || held(&env) == 5),
        "{:?}",
        env.queue_json()
    );
    let listing = String::from_utf8_lossy(&env.run(&["queue"], b"").stdout).into_owned();
    assert!(
        listing.contains("held for its station to collect"),
        "{listing}"
    );

    let mut station = Station::connect(&odmr);
    station.login("station");
    let r = station.say("ATRN");
    assert!(r.starts_with("250"), "{r}");
    let got = station.take_mail(Arc::new(|rcpt: &str| {
        if rcpt.starts_with("gone@") {
            "550 5.1.1 no such user here".to_owned()
        } else {
            "250 2.1.5 ok".to_owned()
        }
    }));
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["a@field.example", "b@lab.field.example", "c@field.example"]
    );
    assert!(got.iter().all(|m| m.from == "someone@elsewhere.example"));
    // Per-recipient outcomes: delivered ones leave, the refused one bounces (its notice
    // waits for elsewhere.example's MX), other.example's mail stays held for its station.
    assert!(
        wait_for(Duration::from_secs(10), || {
            let q = env.queue_json();
            let states: Vec<(String, String)> = q
                .iter()
                .filter(|e| e["location"] == "queue" && e["sender"] != "")
                .flat_map(|e| e["recipients"].as_array().cloned().unwrap_or_default())
                .map(|r| {
                    (
                        r["address"].as_str().unwrap().to_owned(),
                        r["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            states
                .iter()
                .all(|(a, s)| (a == "x@other.example") == (s == "held"))
                && !states
                    .iter()
                    .any(|(a, _)| a.ends_with("field.example") && a != "gone@field.example")
        }),
        "{:?}\n{}",
        env.queue_json(),
        daemon.log()
    );
    let log = daemon.log();
    assert!(log.contains("ODMR turn done"), "{log}");
    assert!(
        log.contains("bounced") && log.contains("gone@field.example"),
        "{log}"
    );

    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let turns = status["odmr"].as_array().unwrap();
    let field = turns
        .iter()
        .find(|d| d["domain"] == "field.example")
        .unwrap();
    assert_eq!(field["moved"], 2, "a and c: {status}");
    assert_eq!(field["station"], "station");
    let other = turns
        .iter()
        .find(|d| d["domain"] == "other.example")
        .unwrap();
    assert_eq!(other["waiting"], 1);
    assert!(other["last_turn"].is_null());
    let text = String::from_utf8_lossy(&env.run(&["status"], b"").stdout).into_owned();
    assert!(
        text.contains("odmr: held until its station collects it"),
        "{text}"
    );
    assert!(
        text.contains("odmr:      other.example: 1 waiting; no turn"),
        "{text}"
    );
    let mut scrape = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    write!(scrape, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut exposition = String::new();
    std::io::Read::read_to_string(&mut scrape, &mut exposition).unwrap();
    assert!(
        exposition
            .contains("ferrymail_odmr_delivered_recipients_total{domain=\"field.example\"} 2"),
        "{exposition}"
    );
    assert!(exposition.contains("ferrymail_odmr_turns_total{domain=\"lab.field.example\"} 1"));
    assert!(
        text.contains("odmr:      lab.field.example: 0 waiting; last turn"),
        "{text}"
    );

    // Nothing left for the station: 453.
    let mut again = Station::connect(&odmr);
    again.login("station");
    let r = again.say("ATRN field.example");
    assert!(r.starts_with("453"), "{r}");
    daemon.stop();
}

#[test]
fn strangers_wrong_domains_and_second_sessions_are_refused() {
    let env = hub();
    let daemon = env.start_daemon();
    let (smtp, odmr) = listeners(&env);
    send_to_hub(&env, &smtp, &["a@field.example"], "held");
    send_to_hub(&env, &smtp, &["x@other.example"], "held too");
    assert!(wait_for(Duration::from_secs(10), || held(&env) == 2));

    let mut s = Station::connect(&odmr);
    assert!(s.say("EHLO station.example").starts_with("250"));
    assert!(s.say("ATRN").starts_with("530"), "ATRN before AUTH");
    assert!(
        s.say("MAIL FROM:<a@b.example>").starts_with("502"),
        "no mail this way"
    );
    let bad = base64::engine::general_purpose::STANDARD
        .encode("station 00000000000000000000000000000000");
    assert!(s.say("AUTH CRAM-MD5").starts_with("334"));
    assert!(s.say(&bad).starts_with("535"), "a wrong digest");
    s.login("station");
    let r = s.say("ATRN other.example");
    assert!(r.starts_with("450"), "not its domain: {r}");

    // One turn per domain: while the first station's turn is open (it has not greeted
    // yet), a second session for the same domain gets 451.
    let r = s.say("ATRN field.example");
    assert!(r.starts_with("250"), "{r}");
    let mut second = Station::connect(&odmr);
    second.login("station");
    let r = second.say("ATRN field.example");
    assert!(r.starts_with("451"), "{r}");

    // The first station greets with garbage: nothing is lost, nothing bounces, the mail
    // is held for the next turn.
    write!(s.writer, "hello? this is not SMTP\r\n").unwrap();
    drop(s);
    assert!(
        wait_for(Duration::from_secs(10), || daemon
            .log()
            .contains("did not answer as a server")),
        "{}",
        daemon.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || held(&env) == 2),
        "{:?}",
        env.queue_json()
    );
    let mut third = Station::connect(&odmr);
    third.login("station");
    assert!(
        third.say("ATRN field.example").starts_with("250"),
        "the lock is gone"
    );
    let got = third.take_mail(Arc::new(|_| "250 2.1.5 ok".to_owned()));
    assert_eq!(got.len(), 1);
    daemon.stop();
}

#[test]
fn a_station_that_goes_away_mid_turn_loses_nothing_and_gets_the_rest_next_time() {
    let env = hub();
    let daemon = env.start_daemon();
    let (smtp, odmr) = listeners(&env);
    for i in 0..5 {
        send_to_hub(&env, &smtp, &["a@field.example"], &format!("m{i}"));
    }
    assert!(wait_for(Duration::from_secs(10), || held(&env) == 5));
    // The station greets, then vanishes after the first RCPT.
    let mut s = Station::connect(&odmr);
    s.login("station");
    assert!(s.say("ATRN").starts_with("250"));
    write!(s.writer, "220 station.example ESMTP\r\n").unwrap();
    let mut line = String::new();
    s.reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("EHLO"), "{line}");
    write!(s.writer, "250-station.example\r\n250 PIPELINING\r\n").unwrap();
    line.clear();
    s.reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("MAIL FROM"), "{line}");
    drop(s);
    assert!(
        wait_for(Duration::from_secs(10), || daemon.log().contains("cut off")),
        "{}",
        daemon.log()
    );
    let q = env.queued();
    let recipients: Vec<serde_json::Value> = q
        .iter()
        .flat_map(|e| e["recipients"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(recipients.len(), 5, "nothing lost, nothing bounced: {q:?}");
    assert!(
        recipients.iter().all(|r| r["attempts"] == 0),
        "no attempt counted: {q:?}"
    );
    let mut next = Station::connect(&odmr);
    next.login("station");
    assert!(next.say("ATRN").starts_with("250"));
    let got = next.take_mail(Arc::new(|_| "250 2.1.5 ok".to_owned()));
    assert_eq!(got.len(), 5, "the rest, next time");
    assert!(wait_for(Duration::from_secs(10), || env
        .queued()
        .is_empty()));
    daemon.stop();
}

/// Our own station against our own hub: when the station's link to the hub opens, it
/// collects its held mail over ODMR and hands it to its LAN mailbox server.
#[test]
fn our_station_collects_from_our_hub_when_its_link_opens() {
    let hub = hub();
    let hub_daemon = hub.start_daemon();
    let (smtp, odmr) = listeners(&hub);
    send_to_hub(
        &hub,
        &smtp,
        &["a@field.example", "b@field.example"],
        "for the station",
    );
    send_to_hub(&hub, &smtp, &["x@other.example"], "not for this station");
    assert!(wait_for(Duration::from_secs(10), || held(&hub) == 3));

    let store = common::upstream::Upstream::accepting("127.0.0.1:0");
    let station = Env::with_config(&format!(
        "[upstream]\nsmarthost = \"{smtp}\"\ntls = \"none\"\n\
         [odmr]\nhub = \"{odmr}\"\ntls = \"none\"\nusername = \"station\"\n\
         password_file = \"secret\"\ndomains = [\"field.example\"]\n\
         [[route]]\nname = \"store\"\ndomains = [\"field.example\"]\nvia = \"{}\"\ntls = \"none\"\n\
         [link]\nprobe_interval = \"1s\"\n",
        store.addr
    ));
    let secret = station.dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let station_daemon = station.start_daemon();
    assert!(
        wait_for(Duration::from_secs(30), || store.received().len() == 1),
        "hub:\n{}\nstation:\n{}",
        hub_daemon.log(),
        station_daemon.log()
    );
    let got = &store.received()[0];
    let mut rcpts = got.rcpts.clone();
    rcpts.sort();
    assert_eq!(rcpts, ["a@field.example", "b@field.example"]);
    assert_eq!(got.from, "someone@elsewhere.example");
    assert!(
        station_daemon.log().contains("ODMR: collection done"),
        "{}",
        station_daemon.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || held(&hub) == 1),
        "other.example stays held"
    );

    // With the link up all along, a flush collects again.
    send_to_hub(&hub, &smtp, &["c@field.example"], "later");
    assert!(wait_for(Duration::from_secs(10), || held(&hub) == 2));
    assert!(station.run(&["flush"], b"").status.success());
    assert!(
        wait_for(Duration::from_secs(30), || store.received().len() == 2),
        "station:\n{}",
        station_daemon.log()
    );
    station_daemon.stop();
    hub_daemon.stop();
}

/// A hostile hub: after the turn it tries to smuggle a second message into the
/// station with a bare-LF end of data. The station's session is the listener's own: the
/// smuggled transaction never becomes a message.
#[test]
fn a_hub_cannot_smuggle_mail_into_the_station() {
    let fake_hub = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hub_addr = fake_hub.local_addr().unwrap();
    let station = Env::with_config(&format!(
        "[upstream]\nsmarthost = \"{hub_addr}\"\ntls = \"none\"\n\
         [odmr]\nhub = \"{hub_addr}\"\ntls = \"none\"\nusername = \"station\"\n\
         password_file = \"secret\"\ndomains = [\"field.example\"]\n\
         [link]\nmode = \"manual\"\n",
    ));
    let secret = station.dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let daemon = station.start_daemon();
    let replies = std::thread::spawn(move || {
        // Probes connect and leave; the collection says EHLO.
        loop {
            let (stream, _) = fake_hub.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut out = stream;
            let mut line = String::new();
            let _ = write!(out, "220 hub.example ESMTP\r\n");
            if reader.read_line(&mut line).unwrap_or(0) == 0 || !line.starts_with("EHLO") {
                continue;
            }
            let mut next = |out: &mut TcpStream, reply: &str| -> String {
                write!(out, "{reply}\r\n").unwrap();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                line
            };
            let auth = next(&mut out, "250-hub.example\r\n250-AUTH CRAM-MD5\r\n250 ATRN");
            assert!(auth.starts_with("AUTH CRAM-MD5"), "{auth}");
            let _digest = next(&mut out, "334 PDEyMy40NTZAaHViPg==");
            let atrn = next(&mut out, "235 2.7.0 ok");
            assert!(atrn.starts_with("ATRN field.example"), "{atrn}");
            let greeting = next(&mut out, "250 OK, turnaround now");
            assert!(greeting.starts_with("220"), "{greeting}");
            // Now we are the client.
            // The station may close the connection on a smuggling attempt: a write or
            // read that fails ends the exchange.
            let mut say = |out: &mut TcpStream, cmd: &str| -> String {
                if write!(out, "{cmd}\r\n").is_err() {
                    return String::new();
                }
                let mut last = String::new();
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).unwrap_or(0) == 0 {
                        return last;
                    }
                    last = l.clone();
                    if l.as_bytes().get(3) != Some(&b'-') {
                        return last;
                    }
                }
            };
            let mut seen = vec![say(&mut out, "EHLO hub.example")];
            seen.push(say(&mut out, "MAIL FROM:<a@b.example>"));
            seen.push(say(&mut out, "RCPT TO:<x@field.example>"));
            seen.push(say(&mut out, "DATA"));
            seen.push(say(
                &mut out,
                "Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@x.example>\nRCPT TO:<x@field.example>\nDATA\nSubject: smuggled\n\nevil\n.\r\n.",
            ));
            seen.push(say(&mut out, "QUIT"));
            return seen;
        }
    });
    assert!(station.run(&["flush"], b"").status.success());
    let seen = replies.join().unwrap();
    assert!(seen[3].starts_with("354"), "{seen:?}");
    // The session is over once the station says so; then nothing more can be committed.
    assert!(
        wait_for(Duration::from_secs(10), || daemon
            .log()
            .contains("ODMR: collection done")),
        "{}",
        daemon.log()
    );
    let queued = station.queue_json();
    assert!(
        queued.iter().all(|e| e["sender"] != "evil@x.example"),
        "smuggled: {queued:?}\n{}",
        daemon.log()
    );
    assert!(queued.len() <= 1, "{queued:?}");
    daemon.stop();
}
