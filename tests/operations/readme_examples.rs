//! The README's field station and hub, taken from README.md itself and run together: only
//! addresses are changed (loopback ports for the listeners, the hub, the station and its
//! mailbox server; the station's address in the hub's lists), and the station's window
//! is moved to now. Mail from the internet for the station waits at the hub, the
//! station's own mail to its domain goes straight to its mailbox server, its outbound
//! mail reaches the hub in the window, and ETRN brings the held mail down and on to the
//! mailbox server, with nothing looping back.

use crate::common;

use std::time::Duration;

use common::upstream::Upstream;
use common::{Daemon, Env, NO_DNS, free_port, wait_for};

/// The TOML block that follows `marker` in the README.
fn example(readme: &str, marker: &str) -> toml::Table {
    let after = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in README"))..];
    let start = after.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &after[start..];
    let end = block.find("```").expect("the block ends");
    block[..end]
        .parse()
        .expect("the README's example parses as TOML")
}

/// Replaces every string equal to `from` (or `host:port` ending in it) in `value`.
fn replace(value: &mut toml::Value, from: &str, to: &str) {
    match value {
        toml::Value::String(s) if s == from => *s = to.to_owned(),
        toml::Value::Array(items) => items.iter_mut().for_each(|v| replace(v, from, to)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| replace(v, from, to)),
        _ => {}
    }
}

/// A spool in a fresh directory with `example` as its configuration, plus its name and
/// a resolver that never answers (nothing here asks the machine's).
fn env(hostname: &str, example: toml::Table) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = dir.path().join("ferrymail.toml");
    let text = format!(
        "hostname = \"{hostname}\"\nspool = \"{}\"\n{NO_DNS}{}",
        spool.display(),
        toml::to_string(&example).unwrap()
    );
    std::fs::write(&config, text).unwrap();
    Env { dir, config, spool }
}

fn send_smtp(port: u16, from: &str, to: &str, subject: &str) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import smtplib,sys; s=smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20); \
             s.sendmail(sys.argv[2], [sys.argv[3]], 'Subject: %s\\r\\n\\r\\nhello\\r\\n' % sys.argv[4]); s.quit()",
            &port.to_string(),
            from,
            to,
            subject,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The examples run one after the other: each picks free ports before its daemons bind
/// them, and another test's listener could take one in between.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn logs(daemons: &[&Daemon]) -> String {
    daemons
        .iter()
        .map(|d| d.log())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

#[test]
fn the_readme_station_and_hub_work_together() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (hub_port, station_port) = (free_port(), free_port());
    let store = Upstream::accepting("127.0.0.1:0");
    let store_at = format!("127.0.0.1:{}", store.addr.port());

    let mut hub = toml::Value::Table(example(&readme, "On the hub:"));
    replace(&mut hub, "0.0.0.0:25", &format!("127.0.0.1:{hub_port}"));
    replace(
        &mut hub,
        "station.field.example.org:25",
        &format!("127.0.0.1:{station_port}"),
    );
    replace(&mut hub, "198.51.100.7/32", "127.0.0.1/32");
    let mut station = toml::Value::Table(example(&readme, "On the station"));
    replace(
        &mut station,
        "0.0.0.0:25",
        &format!("127.0.0.1:{station_port}"),
    );
    replace(
        &mut station,
        "hub.example.org:25",
        &format!("127.0.0.1:{hub_port}"),
    );
    replace(&mut station, "store.field.lan:25", &store_at);
    let now = jiff::ZonedDateTime::now();
    let window = format!(
        "{:02}:00-{:02}:00",
        (now.hour() + 23) % 24,
        (now.hour() + 2) % 24
    );
    replace(&mut station, "01:00-02:00", &window);
    let (toml::Value::Table(hub), toml::Value::Table(station)) = (hub, station) else {
        unreachable!()
    };
    let hub = env("hub.test", hub);
    let station = env("station.test", station);

    let hub_daemon = hub.start_daemon();
    // From the internet, for the station: the hub keeps it.
    send_smtp(
        hub_port,
        "carol@elsewhere.example",
        "bob@field.example.org",
        "held",
    );
    assert!(
        wait_for(Duration::from_secs(20), || hub
            .queued()
            .iter()
            .any(|m| m["recipients"][0]["state"] == "held")),
        "{}",
        hub_daemon.log()
    );

    let station_daemon = station.start_daemon();
    // Local mail on the station, for its own domain and for the world.
    assert!(
        station
            .send(&["alice@field.example.org"], b"Subject: local\n\nx\n")
            .status
            .success()
    );
    assert!(
        station
            .send(&["dave@far.example"], b"Subject: out\n\nx\n")
            .status
            .success()
    );

    // ETRN at link-up brings the held mail down; the station hands it to its store.
    assert!(
        wait_for(Duration::from_secs(30), || store.received().len() == 2),
        "{}",
        logs(&[&hub_daemon, &station_daemon])
    );
    let mut got: Vec<String> = store
        .received()
        .iter()
        .map(|m| m.rcpts[0].clone())
        .collect();
    got.sort();
    assert_eq!(got, ["alice@field.example.org", "bob@field.example.org"]);

    // The station's outbound mail went to the hub, which waits for its own link (MX).
    assert!(
        wait_for(Duration::from_secs(20), || station.queued().is_empty()),
        "{}",
        logs(&[&hub_daemon, &station_daemon])
    );
    let at_hub = hub.queued();
    assert_eq!(at_hub.len(), 1, "{at_hub:?}");
    assert_eq!(at_hub[0]["recipients"][0]["address"], "dave@far.example");
    assert!(
        !logs(&[&hub_daemon, &station_daemon]).contains("5.4.6"),
        "nothing loops"
    );
    station_daemon.stop();
    hub_daemon.stop();
}

/// The README's ODMR hub and station, taken from README.md: only addresses, the secret's
/// path and TLS (none here: no certificate in this test) are changed. The hub never
/// learns an address for the station; the station collects its mail when its link
/// opens and hands it to its mailbox server.
#[test]
fn the_readme_odmr_station_collects_from_its_hub() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (odmr_port, smtp_port) = (free_port(), free_port());
    let store = Upstream::accepting("127.0.0.1:0");
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("secret");
    std::fs::write(&secret, "fieldwork\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let secret = secret.display().to_string();

    let mut hub = toml::Value::Table(example(&readme, "A station behind NAT: ODMR"));
    replace(&mut hub, "0.0.0.0:366", &format!("127.0.0.1:{odmr_port}"));
    replace(&mut hub, "/etc/ferrymail/odmr/station1", &secret);
    let mut station = toml::Value::Table(example(&readme, "On the station, `[odmr]` collects"));
    replace(
        &mut station,
        "hub.example.org:25",
        &format!("127.0.0.1:{smtp_port}"),
    );
    replace(
        &mut station,
        "hub.example.org:366",
        &format!("127.0.0.1:{odmr_port}"),
    );
    replace(&mut station, "/etc/ferrymail/odmr/secret", &secret);
    replace(
        &mut station,
        "store.field.lan:25",
        &format!("127.0.0.1:{}", store.addr.port()),
    );
    replace(&mut station, "required", "none");
    let (toml::Value::Table(mut hub), toml::Value::Table(mut station)) = (hub, station) else {
        unreachable!()
    };
    // The hub also takes mail from the internet, on a port of its own here.
    let listen = hub["listen"].as_array_mut().unwrap();
    listen[0]
        .as_table_mut()
        .unwrap()
        .insert("require_tls".into(), false.into());
    listen.push(toml::Value::Table(
        [(
            "addr".to_owned(),
            toml::Value::from(format!("127.0.0.1:{smtp_port}")),
        )]
        .into_iter()
        .collect(),
    ));
    station.insert(
        "link".into(),
        toml::Value::Table(
            [("probe_interval".to_owned(), "1s".into())]
                .into_iter()
                .collect(),
        ),
    );
    let hub = env("hub.test", hub);
    let station = env("station.test", station);
    let hub_daemon = hub.start_daemon();
    send_smtp(
        smtp_port,
        "carol@elsewhere.example",
        "bob@field.example.org",
        "held for odmr",
    );
    assert!(
        wait_for(Duration::from_secs(20), || hub
            .queued()
            .iter()
            .any(|m| m["recipients"][0]["state"] == "held")),
        "{}",
        hub_daemon.log()
    );
    let station_daemon = station.start_daemon();
    assert!(
        wait_for(Duration::from_secs(30), || store
            .received()
            .iter()
            .any(|m| m.rcpts == ["bob@field.example.org"])),
        "{}",
        logs(&[&hub_daemon, &station_daemon])
    );
    assert!(wait_for(Duration::from_secs(10), || hub
        .queued()
        .is_empty()));
    station_daemon.stop();
    hub_daemon.stop();
}
