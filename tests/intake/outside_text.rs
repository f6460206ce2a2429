//! Text from outside reaches people only printable: an upstream whose reply carries a
//! terminal title sequence (ESC ] … BEL) and a carriage return shows up in `mailq`,
//! `queue --json`, `flush --wait` and the log with `?` in their place; a maildrop file
//! whose name holds a newline cannot forge a log line; `queue show` on a terminal would
//! not replay the escapes either (checked through the library's filter).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::upstream::Upstream;
use common::{Env, wait_for};

const HOSTILE: &str = "451 4.7.1 \x1b]0;owned\x07 try\rlater \u{202e}olleh";

fn clean(what: &str, text: &str) {
    for bad in ['\x1b', '\x07', '\r', '\u{202e}'] {
        assert!(!text.contains(bad), "{what} holds {bad:?}: {text:?}");
    }
}

#[test]
fn escapes_in_replies_and_file_names_never_reach_a_terminal_or_the_log() {
    let upstream = Upstream::start("127.0.0.1:0", false, Arc::new(|_: &str| HOSTILE.to_owned()));
    let env = Env::with_config(&format!(
        "[upstream]\nsmarthost = \"127.0.0.1:{}\"\ntls = \"none\"\n[link]\nprobe_interval = \"1s\"\n",
        upstream.addr.port()
    ));
    let daemon = env.start_daemon();
    assert!(
        env.send(&["bob@far.example"], &common::message("hostile"))
            .status
            .success()
    );
    assert!(
        wait_for(Duration::from_secs(20), || env
            .queued()
            .first()
            .is_some_and(|m| m["recipients"][0]["last_reply"].is_string())),
        "{}",
        daemon.log()
    );
    let json = env.queued();
    let reply = json[0]["recipients"][0]["last_reply"].as_str().unwrap();
    clean("last_reply", reply);
    assert!(reply.contains("?]0;owned? try?later ?olleh"), "{reply}");

    let listing = env.run(&["queue"], b"");
    clean("mailq", &String::from_utf8_lossy(&listing.stdout));
    let flushed = env.run(&["flush", "--wait"], b"");
    clean("flush --wait", &String::from_utf8_lossy(&flushed.stdout));

    let forged = env
        .spool
        .join("maildrop/new/x\nINFO ferrymail: forged line");
    std::fs::write(&forged, b"junk").unwrap();
    assert!(wait_for(Duration::from_secs(40), || !forged.exists()));
    assert!(
        wait_for(Duration::from_secs(10), || daemon
            .log()
            .contains("quarantined")),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    clean("the log", &log);
    assert!(
        !log.lines().any(|l| l.starts_with("INFO ferrymail: forged")),
        "a forged log line:\n{log}"
    );
    daemon.stop();

    let shown =
        ferrymail::printable::printable_lines(b"Subject: \x1b[2J\x1b]0;x\x07\r\n\r\nbody\r\n");
    clean("queue show", &shown.replace("\r\n", "\n"));
}
