//! Bad configuration files: each gives exit 78 and exactly one line on stderr naming
//! the file, the key path and the fault. Good ones print the effective configuration.

use crate::common;

use std::process::Command;

fn check(
    text: &str,
) -> (
    Option<i32>,
    String,
    String,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrymail.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(common::BIN)
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .env_remove("FERRYMAIL_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file,
        dir,
    )
}

#[test]
fn bad_files_give_one_line_naming_file_key_and_fault() {
    let cases = [
        ("listen = 5", "listen: invalid type"),
        ("bogus = 1", "unknown field `bogus`"),
        (
            "[retry]\ninitial = \"5 parsecs\"",
            "retry.initial: invalid duration \"5 parsecs\"",
        ),
        (
            "[retry]\ninitial = \"5h\"\nmax = \"1h\"",
            "retry.initial: is longer than retry.max",
        ),
        (
            "[accept]\nmax_message_size = \"lots\"",
            "accept.max_message_size: invalid size \"lots\"",
        ),
        (
            "[accept]\nrelay_networks = [\"10.0.0.0/33\"]",
            "accept.relay_networks[0]: invalid network",
        ),
        (
            "[accept]\nmax_recipients = 0",
            "accept.max_recipients: must be at least 1",
        ),
        (
            "[link]\nmode = \"sometimes\"",
            "link.mode: unknown variant `sometimes`",
        ),
        (
            "[link]\nwindows = [\"02:00-05:00\", \"25:00-01:00\"]",
            "link.windows[1]: \"25:00-01:00\" is not \"HH:MM-HH:MM\"",
        ),
        (
            "[link]\nprobe_interval = \"0s\"",
            "link.probe_interval: must be at least 1s",
        ),
        (
            "[upstream]\nsmarthost = \"nohostport\"",
            "upstream.smarthost: \"nohostport\" is not host:port",
        ),
        (
            "[upstream]\nsmarthost = \"smtp.example.net:587\"\nusername = \"me\"",
            "upstream: username and password_file go together",
        ),
        (
            "[upstream]\nsmarthost = \"smtp.example.net:587\"\ntls = \"sometimes\"",
            "upstream.tls: unknown variant",
        ),
        (
            "[[route]]\ndomains = [\"a..b\"]",
            "route[0].domains[0]: \"a..b\" is not a domain",
        ),
        (
            "[[route]]\ndomains = [\"x.org\"]\nvia = \"nowhere\"",
            "route[0].via: \"nowhere\" is neither",
        ),
        (
            "[[route]]\ndomains = [\"x.org\"]\n[route.link]\netrn = [\"x.org\"]",
            "route[0].link.etrn: ETRN goes to a relay host: this route delivers to MX",
        ),
        (
            "[[route]]\ndomains = [\"x.org\"]\nvia = \"10.0.0.2:25\"\n[route.link]\nwindows = [\"9-5\"]",
            "route[0].link.windows[0]: \"9-5\" is not \"HH:MM-HH:MM\"",
        ),
        (
            "[[route]]\ndomains = [\"x.org\"]\nvia = \"10.0.0.2:25\"\n[route.link]\nmood = \"auto\"",
            "route[0].link.mood: unknown field `mood`",
        ),
        (
            "[[route]]\nname = \"the store\"\ndomains = [\"x.org\"]",
            "route[0].name: \"the store\": use 1-64 letters",
        ),
        (
            "[[route]]\nname = \"upstream\"\ndomains = [\"x.org\"]",
            "route[0].name: \"upstream\" names another route already",
        ),
        (
            "[link]\netrn = [\"field.example.org\"]",
            "link.etrn: ETRN goes to the smarthost: set [upstream]",
        ),
        (
            "[[listen]]\naddr = \"127.0.0.1:465\"\nkind = \"smtps\"",
            "listen[0].kind: \"smtps\" needs a [tls] section",
        ),
        (
            "[[listen]]\naddr = \"not an address\"",
            "listen[0].addr: invalid socket address",
        ),
        (
            "[dns]\nservers = [\"127.0.0.1\"]",
            "dns.servers[0]: invalid socket address",
        ),
        (
            "hostname = \"bad host\"",
            "hostname: \"bad host\" is not a valid host name",
        ),
        ("this is not toml", ":1: "),
        (
            "[retry]\nexpire_after = 5",
            "retry.expire_after: invalid type",
        ),
    ];
    for (text, want) in cases {
        let (code, _, err, file, _dir) = check(text);
        assert_eq!(code, Some(78), "{text:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{text:?}: not one line: {err:?}");
        assert!(
            err.contains(&file.display().to_string()),
            "{text:?}: file not named: {err}"
        );
        assert!(err.contains(want), "{text:?}: wanted {want:?} in {err:?}");
    }
}

#[test]
fn a_missing_file_is_a_config_error() {
    let out = Command::new(common::BIN)
        .args(["--config", "/nonexistent/ferrymail.toml", "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ferrymail.toml: cannot read")
    );
}

#[test]
fn the_effective_configuration_reads_back_unchanged() {
    let (code, stdout, err, _, _dir) = check(
        "hostname = \"edge.example.org\"\nspool = \"spool\"\n[retry]\nexpire_after = \"3d\"\n[accept]\nmax_message_size = \"10MB\"\n[[route]]\ndomains = [\".field.example.org\"]\nhold = true\n",
    );
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "expire_after = \"3days\"",
        "max_message_size = \"10MB\"",
        "mode = \"auto\"",
        "addr = \"127.0.0.1:2525\"",
        "hold = true",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    // The relative spool is anchored at the file's directory.
    assert!(stdout.contains("/spool\""), "{stdout}");
    let (code, again, err, _, _dir2) = check(&stdout);
    assert_eq!(
        code,
        Some(0),
        "printed configuration does not read back: {err}"
    );
    assert_eq!(
        again.lines().skip(1).collect::<Vec<_>>(),
        stdout.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn no_file_means_built_in_defaults() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .args(["config", "check"])
        .env_remove("FERRYMAIL_CONFIG")
        .env("XDG_STATE_HOME", home.path())
        .output()
        .unwrap();
    if std::path::Path::new(ferrymail::config::SYSTEM_CONFIG).exists() {
        return; // this machine has a system configuration; the default path is not taken
    }
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("built-in defaults"));
    assert!(text.contains("addr = \"127.0.0.1:2525\""));
    let expected_spool = if rustix::process::geteuid().is_root() {
        "/var/spool/ferrymail".to_owned()
    } else {
        home.path().join("ferrymail").display().to_string()
    };
    assert!(
        text.contains(&format!("spool = \"{expected_spool}\"")),
        "{text}"
    );
}

#[test]
fn the_shipped_example_configuration_is_valid_and_shows_every_key() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ferrymail.toml");
    let out = Command::new(common::BIN)
        .args(["--config", example.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every key of the schema appears in the example, set or commented out.
    let text = std::fs::read_to_string(&example).unwrap();
    for key in [
        "hostname",
        "spool",
        "[[listen]]",
        "addr",
        "kind",
        "[tls]",
        "cert",
        "key",
        "[accept]",
        "max_message_size",
        "max_recipients",
        "relay_networks",
        "local_domains",
        "users",
        "[upstream]",
        "smarthost",
        "tls =",
        "ca =",
        "username",
        "password_file",
        "[[route]]",
        "domains",
        "via",
        "hold",
        "[dns]",
        "servers",
        "[link]",
        "mode",
        "probe_interval",
        "trigger_file",
        "windows",
        "every",
        "etrn =",
        "[retry]",
        "initial",
        "max =",
        "expire_after",
        "warn_after",
        "[etrn]",
        "allowed_networks",
    ] {
        assert!(
            text.contains(key),
            "contrib/ferrymail.toml does not mention {key}"
        );
    }
}

/// Files the configuration names are read by `config check` as `serve` reads them: a
/// missing one fails it with the key and the full path; secrets others can read, and a
/// configuration others can write, are warned about.
#[test]
fn config_check_reads_the_files_the_configuration_names() {
    let cases = [
        (
            "[tls]\ncert = \"nope.pem\"\nkey = \"nope.key\"\n",
            "tls.cert",
            "nope.pem",
        ),
        ("[accept]\nusers = \"users\"\n", "accept.users", "users"),
        (
            "[upstream]\nsmarthost = \"a.example:587\"\nca = \"ca.pem\"\n",
            "upstream.ca",
            "ca.pem",
        ),
        (
            "[upstream]\nsmarthost = \"a.example:587\"\nusername = \"me\"\npassword_file = \"secret\"\n",
            "upstream.password_file",
            "secret",
        ),
    ];
    for (text, key, name) in cases {
        let (code, _, err, _, dir) = check(text);
        assert_eq!(code, Some(78), "{text:?}: {err}");
        let full = dir.path().join(name).display().to_string();
        assert!(
            err.contains(&format!("{key} {full}")),
            "{text:?}: wanted {key} {full} in {err}"
        );
    }

    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = dir.path().join("ferrymail.toml");
    std::fs::write(
        &file,
        "[upstream]\nsmarthost = \"a.example:587\"\nusername = \"me\"\npassword_file = \"secret\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(common::BIN)
        .args([
            "--config",
            file.to_str().unwrap(),
            "config",
            "check",
            "--quiet",
        ])
        .env_remove("FERRYMAIL_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("is writable by every user"), "{err}");
    assert!(
        err.contains(&format!(
            "upstream.password_file {} is readable by every user",
            secret.display()
        )),
        "{err}"
    );
}
