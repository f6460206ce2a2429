//! DKIM signing checked by an independent verifier, Debian's python3-dkim (the library
//! behind `dkimverify`), with the published record given to it in place of DNS: both
//! algorithms, a message with LF line ends from `sendmail`, 8-bit text, folded headers
//! and blank lines at the end; the same signature after three deferrals; and mail
//! relayed by a stranger to a held domain left unsigned. Needs python3-dkim (Debian). `tests/interop/dkim.sh` runs
//! opendkim's verifier against a real DNS server.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::upstream::Upstream;
use common::{Env, wait_for};

/// Makes a key with `ferrymail dkim keygen`; returns its file and its TXT record.
fn keygen(dir: &Path, selector: &str, algorithm: &str) -> (String, String) {
    let key = dir.join(format!("{selector}.key"));
    let out = std::process::Command::new(common::BIN)
        .args([
            "dkim",
            "keygen",
            "--domain",
            "example.org",
            "--selector",
            selector,
        ])
        .args(["--algorithm", algorithm, "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{selector}._domainkey.example.org. IN TXT")))
        .unwrap_or_else(|| panic!("no record in {text}"));
    // Zone strings joined back into the record.
    let record: String = line
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    (key.display().to_string(), record)
}

/// python3-dkim's verdict on signature `index` of `message`, DNS answered from `records`.
fn verify(message: &[u8], index: usize, records: &[(&str, &str)]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, message).unwrap();
    let table: Vec<String> = records
        .iter()
        .map(|(name, txt)| format!("{:?}: {:?}", format!("{name}._domainkey.example.org."), txt))
        .collect();
    let script = format!(
        "import dkim, sys\n\
         records = {{{}}}\n\
         def dns(name, timeout=5):\n    return records.get(name.decode()).encode()\n\
         d = dkim.DKIM(open({:?}, 'rb').read())\n\
         ok = d.verify(idx={index}, dnsfunc=dns)\n\
         sys.exit(0 if ok else 1)\n",
        table.join(", "),
        file.display().to_string()
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3 with python3-dkim (Debian) is needed");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn signatures(message: &str) -> Vec<&str> {
    message
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .split("\r\nDKIM-Signature:")
        .skip(usize::from(!message.starts_with("DKIM-Signature:")))
        .collect()
}

#[test]
fn signed_once_at_commit_and_verified_by_python3_dkim() {
    let keys = tempfile::tempdir().unwrap();
    let (rsa_key, rsa_record) = keygen(keys.path(), "rsa", "rsa-sha256");
    let (ed_key, ed_record) = keygen(keys.path(), "ed", "ed25519-sha256");
    let records = [("rsa", rsa_record.as_str()), ("ed", ed_record.as_str())];
    assert!(
        rsa_record.starts_with("v=DKIM1; k=rsa; p=MII"),
        "{rsa_record}"
    );

    let deferrals = Arc::new(AtomicUsize::new(0));
    let count = deferrals.clone();
    let upstream = Upstream::start(
        "127.0.0.1:0",
        true,
        Arc::new(move |rcpt: &str| {
            if rcpt.starts_with("slow@") && count.fetch_add(1, Ordering::SeqCst) < 3 {
                "451 4.3.0 try again".to_owned()
            } else {
                "250 2.1.5 ok".to_owned()
            }
        }),
    );
    let env = Env::with_config(&format!(
        "[accept]\nrelay_networks = [\"10.9.9.0/24\"]\n\
         [upstream]\nsmarthost = \"{}\"\ntls = \"none\"\n\
         [upstream.rewrite]\nsenders = {{ \"*\" = \"me@example.org\" }}\nfrom_header = true\n\
         [[route]]\ndomains = [\"field.example\"]\nhold = true\n\
         [link]\nprobe_interval = \"1s\"\n\
         [[dkim]]\ndomain = \"example.org\"\nselector = \"rsa\"\nkey = \"{rsa_key}\"\n\
         [[dkim]]\ndomain = \"example.org\"\nselector = \"ed\"\nkey = \"{ed_key}\"\nalgorithm = \"ed25519-sha256\"\n",
        upstream.addr
    ));
    let daemon = env.start_daemon();

    // LF line ends as programs write them, a folded Subject, 8-bit text, and blank lines
    // at the end of the body.
    let message = "From: Cron Daemon <root@edge.test>\nTo: friend@example.net\n\
                   Subject: a long subject that a program\n\tfolded over two lines\n\
                   Content-Type: text/plain; charset=utf-8\n\n\
                   Grüße  aus dem Feld\t \n\nlast line\n\n\n\n";
    let sent = env.send(&["-i", "friend@example.net"], message.as_bytes());
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let slow = env.send(
        &["slow@example.net"],
        b"Subject: retried\n\nsame bytes every time\n",
    );
    assert!(slow.status.success());

    // A stranger relays mail for a held domain, From: our domain: not ours to sign.
    common::smtp_session(
        &status_listener(&env),
        &[
            ("EHLO stranger.example", "250"),
            ("MAIL FROM:<me@example.org>", "250"),
            ("RCPT TO:<someone@field.example>", "250"),
            ("DATA", "354"),
            (
                "From: me@example.org\r\nSubject: passing through\r\n\r\nx\r\n.",
                "250",
            ),
            ("QUIT", "221"),
        ],
    );

    assert!(
        wait_for(Duration::from_secs(30), || upstream
            .received()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains("Feld"))),
        "{}",
        daemon.log()
    );
    let got = upstream.received();
    let first = got
        .iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains("Feld"))
        .unwrap();
    assert_eq!(first.from, "me@example.org");
    let text = String::from_utf8_lossy(&first.data).into_owned();
    let sigs = signatures(&text);
    assert_eq!(sigs.len(), 2, "one per key:\n{text}");
    assert!(sigs[0].contains("a=rsa-sha256") && sigs[1].contains("a=ed25519-sha256"));
    assert!(
        sigs[0].contains("h=from:from:"),
        "From oversigned: {}",
        sigs[0]
    );
    for index in 0..2 {
        verify(&first.data, index, &records)
            .unwrap_or_else(|e| panic!("signature {index}: {e}\n{text}"));
    }
    // A changed body fails: the verifier is not saying yes to everything.
    let tampered = text.replace("last line", "last lime");
    assert!(verify(tampered.as_bytes(), 0, &records).is_err());

    // Three deferrals, then delivery: the signature made at commit is the one that leaves.
    let stored_signature = || -> Option<String> {
        let queued = env.queued();
        let entry = queued
            .iter()
            .find(|e| e["recipients"][0]["address"] == "slow@example.net")?;
        let shown = env.run(&["queue", "show", entry["id"].as_str()?], b"");
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        let at = shown.find("DKIM-Signature: v=1; a=rsa-sha256")?;
        let end = shown[at..]
            .find("\nDKIM-Signature:")
            .map_or(shown.len(), |e| at + e);
        Some(shown[at..end].replace("\r\n", "\n"))
    };
    assert!(wait_for(Duration::from_secs(20), || stored_signature().is_some()));
    let before = stored_signature().unwrap();
    // Each retry only once the last deferral is recorded (not while it is in flight).
    let attempts = || -> i64 {
        env.queued()
            .iter()
            .find(|e| e["recipients"][0]["address"] == "slow@example.net")
            .filter(|e| e["recipients"][0]["state"] == "deferred")
            .and_then(|e| e["recipients"][0]["attempts"].as_i64())
            .unwrap_or(0)
    };
    for tries in 1..=3 {
        assert!(
            wait_for(Duration::from_secs(20), || attempts() == tries),
            "{:?}\n{}",
            env.queue_json(),
            daemon.log()
        );
        assert!(env.run(&["queue", "retry", "--all"], b"").status.success());
    }
    assert!(
        wait_for(Duration::from_secs(20), || upstream
            .received()
            .iter()
            .any(|m| m.rcpts == ["slow@example.net"])),
        "{}",
        daemon.log()
    );
    let retried = upstream
        .received()
        .into_iter()
        .find(|m| m.rcpts == ["slow@example.net"])
        .unwrap();
    let retried_text = String::from_utf8_lossy(&retried.data).into_owned();
    assert!(
        retried_text
            .replace("\r\n", "\n")
            .contains(before.trim_end()),
        "the stored signature left:\n{before}\n---\n{retried_text}"
    );
    verify(&retried.data, 0, &records).unwrap();
    assert!(deferrals.load(Ordering::SeqCst) >= 4);

    let held = env
        .queued()
        .into_iter()
        .find(|e| e["recipients"][0]["address"] == "someone@field.example")
        .expect("the relayed message is held");
    let shown = env.run(&["queue", "show", held["id"].as_str().unwrap()], b"");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("passing through") && !shown.contains("DKIM-Signature"),
        "{shown}"
    );
    daemon.stop();
}

fn status_listener(env: &Env) -> String {
    let status = env.run(&["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    status["listeners"][0].as_str().unwrap().to_owned()
}

#[test]
fn a_key_for_the_wrong_algorithm_is_a_configuration_error() {
    let keys = tempfile::tempdir().unwrap();
    let (ed_key, _) = keygen(keys.path(), "ed", "ed25519-sha256");
    let env = Env::with_config(&format!(
        "[[dkim]]\ndomain = \"example.org\"\nselector = \"s\"\nkey = \"{ed_key}\"\n"
    ));
    let out = env.run(&["config", "check"], b"");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dkim[0].key") && err.contains("not an rsa-sha256 key"),
        "{err}"
    );
    let again = std::process::Command::new(common::BIN)
        .args([
            "dkim",
            "keygen",
            "--domain",
            "example.org",
            "--selector",
            "ed",
            "--algorithm",
        ])
        .args(["ed25519-sha256", "--out", &ed_key])
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(73),
        "an existing key is never overwritten"
    );
}

/// The whole way for a laptop: cron's own `sendmail` call to `root` reaches its owner
/// through the smarthost, with the account's address, signed for the owner's domain.
#[test]
fn a_laptops_cron_mail_reaches_its_owner_with_the_account_address_and_signed() {
    let keys = tempfile::tempdir().unwrap();
    let (key, record) = keygen(keys.path(), "laptop", "rsa-sha256");
    let upstream = Upstream::accepting("127.0.0.1:0");
    let env = Env::with_config(&format!(
        "admin = \"me@example.org\"\n\
         [upstream]\nsmarthost = \"{}\"\ntls = \"none\"\n\
         [upstream.rewrite]\nsenders = {{ \"*\" = \"me@example.org\" }}\nfrom_header = true\n\
         [link]\nprobe_interval = \"1s\"\n\
         [[dkim]]\ndomain = \"example.org\"\nselector = \"laptop\"\nkey = \"{key}\"\n",
        upstream.addr
    ));
    let daemon = env.start_daemon();
    let sendmail = env.dir.path().join("sendmail");
    std::os::unix::fs::symlink(common::BIN, &sendmail).unwrap();
    let mut cron = std::process::Command::new(&sendmail);
    cron.arg("-C").arg(&env.config);
    cron.args(["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
    let out = common::run_with_input(
        cron,
        b"Subject: Cron <root@edge> /usr/local/bin/backup\nContent-Type: text/plain; charset=UTF-8\n\nbackup done\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_for(Duration::from_secs(30), || !upstream.received().is_empty()),
        "{}",
        daemon.log()
    );
    let got = &upstream.received()[0];
    assert_eq!(got.from, "me@example.org", "the account's address");
    assert_eq!(
        got.rcpts,
        ["me@example.org"],
        "root's mail goes to the admin"
    );
    let text = String::from_utf8_lossy(&got.data);
    assert!(
        text.contains("From: \"CronDaemon\" <me@example.org>"),
        "{text}"
    );
    verify(&got.data, 0, &[("laptop", &record)]).unwrap_or_else(|e| panic!("{e}\n{text}"));
    daemon.stop();
}
