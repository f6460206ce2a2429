//! Mail without a network: two nodes (a station and its hub, each a real daemon with
//! its own spool) that share nothing but files. Bundles go one way, receipts the other;
//! the envelope arrives whole at the far upstream; a notice comes back in a second
//! bundle; replays, overlapping and cut-off bundles queue nothing twice; a changed
//! bundle or one from a stranger queues nothing at all. BSMTP and rmail are the
//! UUCP-era doors in.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::upstream::Upstream;
use common::{Env, stored_messages, wait_for};

/// A station that sends everything through its hub, by bundle only.
fn station(key: &Path) -> Env {
    Env::with_config(&format!(
        "[link]\nmode = \"manual\"\n[local]\nnames = [\"station.example\"]\n\
         [upstream]\nsmarthost = \"127.0.0.1:1\"\n\
         [bundle]\nnode = \"station\"\n\
         [[bundle_peer]]\nnode = \"hub\"\nkey_file = \"{}\"\nroutes = [\"upstream\"]\n",
        key.display()
    ))
}

/// A hub holding station.example's mail for bundles, and relaying the rest: far.example
/// to an upstream that takes DSN requests, plain.example to one that does not.
fn hub(key: &Path, far: &Upstream, plain: &Upstream) -> Env {
    Env::with_config(&format!(
        "[link]\nmode = \"manual\"\n\
         [[route]]\ndomains = [\"station.example\"]\nvia = \"bundle\"\nname = \"station\"\n\
         [[route]]\ndomains = [\"far.example\"]\nvia = \"{}\"\n\
         [[route]]\ndomains = [\"plain.example\"]\nvia = \"{}\"\n\
         [bundle]\nnode = \"hub\"\n\
         [[bundle_peer]]\nnode = \"station\"\nkey_file = \"{}\"\nroutes = [\"station\"]\n",
        far.addr,
        plain.addr,
        key.display()
    ))
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = std::process::Command::new(common::BIN)
        .args(["bundle", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    key
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn export(env: &Env, route: &str, out: &Path) -> String {
    ok(env.run(
        &[
            "bundle",
            "export",
            "--route",
            route,
            "--out",
            out.to_str().unwrap(),
        ],
        b"",
    ))
}

fn import(env: &Env, file: &Path, receipt: Option<&Path>) -> Output {
    let mut args = vec!["bundle", "import"];
    if let Some(r) = receipt {
        args.extend(["--receipt", r.to_str().unwrap()]);
    }
    args.push(file.to_str().unwrap());
    env.run(&args, b"")
}

/// Recipients by state, over the whole queue.
fn states(env: &Env) -> Vec<String> {
    let mut out: Vec<String> = env
        .queued()
        .iter()
        .flat_map(|m| m["recipients"].as_array().unwrap().clone())
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

fn smtp_listener(env: &Env) -> String {
    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    status["listeners"][0].as_str().unwrap().to_owned()
}

#[test]
fn a_station_and_its_hub_exchange_mail_receipts_and_notices_by_files_alone() {
    let far = Upstream::with_dsn("127.0.0.1:0");
    let plain = Upstream::accepting("127.0.0.1:0");
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "shared.key");
    let (station, hub) = (station(&key), hub(&key, &far, &plain));
    let (_s, _h) = (station.start_daemon(), hub.start_daemon());
    let stick = tempfile::tempdir().unwrap();
    let file = |name: &str| stick.path().join(name);

    common::smtp_session(
        &smtp_listener(&station),
        &[
            ("EHLO field.example", "250"),
            (
                "MAIL FROM:<user@station.example> RET=HDRS ENVID=trip+2B1",
                "250",
            ),
            (
                "RCPT TO:<a@far.example> NOTIFY=SUCCESS ORCPT=rfc822;a@far.example",
                "250",
            ),
            ("RCPT TO:<b@plain.example> NOTIFY=SUCCESS,FAILURE", "250"),
            ("DATA", "354"),
            ("Subject: from the field\r\n\r\nall well\r\n.", "250"),
            ("QUIT", "221"),
        ],
    );
    assert!(wait_for(std::time::Duration::from_secs(10), || states(
        &station
    )
    .len()
        == 2));

    let said = export(&station, "upstream", &file("to-hub.1"));
    assert!(said.contains("1 messages, 2 recipients"), "{said}");
    assert_eq!(states(&station), ["bundled", "bundled"]);

    let said = ok(import(&hub, &file("to-hub.1"), Some(&file("receipt.1"))));
    assert!(said.contains("1 messages (2 recipients) queued"), "{said}");
    ok(hub.run(&["flush", "--wait"], b""));
    let at_far = far.received();
    assert_eq!(at_far.len(), 1);
    let commands = at_far[0].commands.join("\n");
    assert!(
        commands.contains("MAIL FROM:<user@station.example>"),
        "{commands}"
    );
    assert!(
        commands.contains("RET=HDRS") && commands.contains("ENVID=trip+2B1"),
        "{commands}"
    );
    assert!(
        commands.contains("RCPT TO:<a@far.example> NOTIFY=SUCCESS ORCPT=rfc822;a@far.example"),
        "{commands}"
    );
    assert!(String::from_utf8_lossy(&at_far[0].data).contains("from station (bundle "));
    assert_eq!(plain.received().len(), 1);

    // The receipt crosses back: both recipients are delivered at the station.
    let said = ok(import(&station, &file("receipt.1"), None));
    assert!(said.contains("2 delivered, 0 bounced"), "{said}");
    assert!(wait_for(std::time::Duration::from_secs(10), || states(
        &station
    )
    .is_empty()));

    // plain.example cannot carry NOTIFY on: the hub says "relayed", in the next bundle.
    assert!(export(&hub, "station", &file("to-station.1")).contains("1 messages"));
    let said = ok(import(
        &station,
        &file("to-station.1"),
        Some(&file("receipt.2")),
    ));
    assert!(said.contains("1 messages (1 recipients) queued"), "{said}");
    let notices = stored_messages(&station.spool);
    assert_eq!(notices.len(), 1);
    let text = String::from_utf8_lossy(&notices[0].1);
    assert!(text.contains("Action: relayed"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; b@plain.example"),
        "{text}"
    );
    assert!(text.contains("Original-Envelope-Id: trip+1"), "{text}");

    let said = ok(import(&hub, &file("receipt.2"), None));
    assert!(said.contains("1 delivered"), "{said}");
    assert!(wait_for(std::time::Duration::from_secs(10), || states(
        &hub
    )
    .is_empty()));
}

/// `n` messages of 60 KiB that do not compress: a bundle of several chunks.
fn fill(env: &Env, n: usize) {
    for i in 0..n {
        let mut body = format!("Subject: bulk {i}\r\n\r\n").into_bytes();
        let mut x: u64 = 0x9e3779b97f4a7c15 ^ i as u64;
        for _ in 0..1000 {
            let mut line = String::new();
            for _ in 0..10 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                line.push_str(&format!("{:06x}", x & 0xff_ffff));
            }
            body.extend_from_slice(line.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        ok(env.send(&["-f", "user@station.example", "far@far.example"], &body));
    }
    assert!(wait_for(std::time::Duration::from_secs(30), || states(env)
        .len()
        == n));
}

/// Where chunk `seq`'s frame line starts and its bytes end.
fn chunk_span(bytes: &[u8], seq: usize) -> (usize, usize) {
    let marker = format!("chunk {seq} ");
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the chunk is there");
    let line_end = at + bytes[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let line = std::str::from_utf8(&bytes[at..line_end]).unwrap();
    let zlen: usize = line.split(' ').nth(2).unwrap().parse().unwrap();
    (at, line_end + zlen)
}

#[test]
fn replays_overlaps_cuts_changes_and_strangers_queue_nothing_twice() {
    let far = Upstream::accepting("127.0.0.1:0");
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "shared.key");
    let (station, hub) = (station(&key), hub(&key, &far, &far));
    let (_s, _h) = (station.start_daemon(), hub.start_daemon());
    let stick = tempfile::tempdir().unwrap();
    let file = |name: &str| stick.path().join(name);
    fill(&station, 40);
    export(&station, "upstream", &file("b1"));
    let bytes = std::fs::read(file("b1")).unwrap();
    let (start_of_1, end_of_1) = chunk_span(&bytes, 1);

    // Changed on purpose (its CRC recomputed): refused whole.
    let mut changed = bytes.clone();
    let line_end = start_of_1
        + changed[start_of_1..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap()
        + 1;
    changed[line_end + 100] ^= 1;
    let crc = crc32(&changed[line_end..end_of_1]);
    let line = String::from_utf8(changed[start_of_1..line_end].to_vec()).unwrap();
    let mut fields: Vec<String> = line.trim_end().split(' ').map(str::to_owned).collect();
    fields[4] = format!("{crc:08x}");
    changed.splice(
        start_of_1..line_end,
        format!("{}\n", fields.join(" ")).into_bytes(),
    );
    std::fs::write(file("changed"), &changed).unwrap();
    let out = import(&hub, &file("changed"), None);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it was changed; nothing imported"));
    assert!(states(&hub).is_empty());

    // Cut inside chunk 1: chunk 0's messages come in, the rest is reported.
    std::fs::write(file("cut"), &bytes[..(start_of_1 + end_of_1) / 2]).unwrap();
    let said = ok(import(&hub, &file("cut"), Some(&file("r-cut"))));
    assert!(
        said.contains("not read: the bundle is cut off after chunk 1"),
        "{said}"
    );
    let first = states(&hub).len();
    assert!(
        first > 0 && first < 40,
        "{first} of 40 from the first chunk"
    );

    // Damaged in transit (CRC fails) in chunk 1: the others come in.
    let mut damaged = bytes.clone();
    damaged[line_end + 100] ^= 1;
    std::fs::write(file("damaged"), &damaged).unwrap();
    let said = ok(import(&hub, &file("damaged"), None));
    assert!(
        said.contains("not read: chunk 1 was damaged in transit"),
        "{said}"
    );
    assert!(
        said.contains(&format!("{first} recipients taken before")),
        "{said}"
    );

    // The whole bundle, twice: nothing doubled.
    ok(import(&hub, &file("b1"), Some(&file("r1"))));
    assert_eq!(states(&hub).len(), 40);
    let said = ok(import(&hub, &file("b1"), None));
    assert!(
        said.contains("0 messages (0 recipients) queued, 40 recipients taken before"),
        "{said}"
    );
    assert_eq!(states(&hub).len(), 40);

    // The receipt of the cut bundle delivers only what it took; the full one the rest.
    let said = ok(import(&station, &file("r-cut"), None));
    assert!(said.contains(&format!("{first} delivered")), "{said}");
    let said = ok(import(&station, &file("r1"), None));
    assert!(
        said.contains(&format!("{} delivered", 40 - first)),
        "{said}"
    );
    assert!(wait_for(std::time::Duration::from_secs(10), || states(
        &station
    )
    .is_empty()));

    // A stranger's bundle, under a key the hub does not know for it.
    let stranger_key = keygen(keys.path(), "stranger.key");
    let stranger = Env::with_config(&format!(
        "[link]\nmode = \"manual\"\n[upstream]\nsmarthost = \"127.0.0.1:1\"\n\
         [bundle]\nnode = \"station\"\n\
         [[bundle_peer]]\nnode = \"hub\"\nkey_file = \"{}\"\nroutes = [\"upstream\"]\n",
        stranger_key.display()
    ));
    let _d = stranger.start_daemon();
    ok(stranger.send(
        &["-f", "x@station.example", "far@far.example"],
        b"Subject: s\r\n\r\nx\r\n",
    ));
    assert!(wait_for(std::time::Duration::from_secs(10), || states(
        &stranger
    )
    .len()
        == 1));
    export(&stranger, "upstream", &file("forged"));
    let out = import(&hub, &file("forged"), None);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not authenticate"));
    assert_eq!(states(&hub).len(), 40);
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn bsmtp_comes_in_with_sendmail_bs_and_rmail_and_goes_out_as_a_batch() {
    let env =
        Env::with_config("[link]\nmode = \"manual\"\n[upstream]\nsmarthost = \"127.0.0.1:1\"\n");
    let _d = env.start_daemon();
    let batch = b"MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\nSubject: one\n\n..dot\n.\n\
        MAIL FROM:<>\nRCPT TO:<c@y.example>\nRCPT TO:<d@y.example>\nDATA\nSubject: two\n\nx\n.\n\
        RCPT TO:<lost@y.example>\n";
    let out = env.run(&["send", "-bS"], batch);
    assert_eq!(out.status.code(), Some(65), "one transaction refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 16: RCPT without MAIL"));

    let dir = tempfile::tempdir().unwrap();
    let rmail = dir.path().join("rmail");
    std::os::unix::fs::symlink(common::BIN, &rmail).unwrap();
    let mut cmd = std::process::Command::new(&rmail);
    cmd.env("FERRYMAIL_CONFIG", &env.config)
        .arg("(e@y.example)");
    let out = common::run_with_input(
        cmd,
        b"From joe Tue Dec  1 10:00:00 2026 remote from origin.example\nSubject: uucp\n\n.\nstill here\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_for(std::time::Duration::from_secs(10), || states(
        &env
    )
    .len()
        == 4));

    let out = env.run(
        &[
            "bundle", "export", "--route", "upstream", "--format", "bsmtp",
        ],
        b"",
    );
    let text = String::from_utf8(ok(out).into_bytes()).unwrap();
    assert!(
        text.contains("MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\n"),
        "{text}"
    );
    assert!(text.contains("\n..dot\n.\n"), "{text}");
    assert!(
        text.contains("MAIL FROM:<joe@origin.example>\nRCPT TO:<e@y.example>\n"),
        "{text}"
    );
    assert!(text.contains("\n..\nstill here\n.\n"), "{text}");
    assert!(wait_for(std::time::Duration::from_secs(10), || states(
        &env
    )
    .is_empty()));
}

#[test]
fn max_bytes_leaves_the_rest_for_the_next_bundle_and_retry_sends_bundled_mail_again() {
    let far = Upstream::accepting("127.0.0.1:0");
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "shared.key");
    let (station, hub) = (station(&key), hub(&key, &far, &far));
    let (_s, _h) = (station.start_daemon(), hub.start_daemon());
    let stick = tempfile::tempdir().unwrap();
    let file = |name: &str| stick.path().join(name);
    fill(&station, 6);

    let out = station.run(
        &[
            "bundle",
            "export",
            "--route",
            "upstream",
            "--max-bytes",
            "200000",
            "--out",
            file("part1").to_str().unwrap(),
        ],
        b"",
    );
    let said = ok(out);
    assert!(std::fs::metadata(file("part1")).unwrap().len() <= 200_000);
    assert!(said.contains("messages left for the next one"), "{said}");
    let bundled = states(&station).iter().filter(|s| *s == "bundled").count();
    assert!(
        bundled > 0 && bundled < 6,
        "{bundled} of 6 in the first part"
    );
    export(&station, "upstream", &file("part2"));
    assert_eq!(states(&station), vec!["bundled"; 6]);

    // No receipt comes: the operator sends it all again, and the hub takes each once.
    ok(station.run(&["queue", "retry", "--all"], b""));
    assert_eq!(states(&station), vec!["deferred"; 6]);
    export(&station, "upstream", &file("again"));
    ok(import(&hub, &file("part1"), None));
    ok(import(&hub, &file("part2"), None));
    let said = ok(import(&hub, &file("again"), Some(&file("receipt"))));
    assert!(
        said.contains("0 messages (0 recipients) queued, 6 recipients taken before"),
        "{said}"
    );
    assert_eq!(states(&hub).len(), 6);
    let said = ok(import(&station, &file("receipt"), None));
    assert!(said.contains("6 delivered"), "{said}");
}
