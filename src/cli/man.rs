//! `ferrymail man --dir DIR` writes the manual pages into DIR's section directories
//! (`man1`, `man5`, `man8`, as `man` looks for them), `ferrymail completions SHELL`
//! prints shell completions, both generated from the clap definitions: ferrymail(8) and
//! a page per subcommand (ferrymail-send(8) with the sendmail flags it takes),
//! sendmail(8) and mailq(1) from the personalities' flag tables below, and
//! ferrymail.toml(5) from the annotated example configuration (contrib/ferrymail.toml),
//! which lists every key with its default.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory};

use super::Cli;
use crate::exit::{self, Failure};

/// The example configuration: every option, its default, a line about it.
pub const CONFIG_EXAMPLE: &str = include_str!("../../contrib/ferrymail.toml");

/// Writes every page into its section directory under `dir` (`man8/ferrymail.8`…);
/// returns their paths.
pub(crate) fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let mut written = Vec::new();
    let mut put = |name: String, section: &str, bytes: Vec<u8>| -> Result<(), Failure> {
        let sub = dir.join(format!("man{section}"));
        let io =
            |e: std::io::Error| Failure::new(exit::CANTCREAT, format!("{}: {e}", sub.display()));
        std::fs::create_dir_all(&sub).map_err(io)?;
        let path = sub.join(format!("{name}.{section}"));
        std::fs::write(&path, bytes).map_err(io)?;
        written.push(path);
        Ok(())
    };
    // No `help` subcommand in the pages: there is no ferrymail-help(8) to point to.
    let cli = Cli::command().disable_help_subcommand(true);
    put("ferrymail".into(), "8", render(cli.clone(), "8")?)?;
    for sub in cli.get_subcommands() {
        let name = format!("ferrymail-{}", sub.get_name());
        let page = if sub.get_name() == "send" {
            sendmail_command()
                .name(name.clone())
                .about("Queue a message read on stdin; takes sendmail's flags")
        } else {
            sub.clone().name(name.clone())
        };
        put(name, "8", render(page, "8")?)?;
    }
    put("sendmail".into(), "8", render(sendmail_command(), "8")?)?;
    put("mailq".into(), "1", render(mailq_command(), "1")?)?;
    put(
        "ferrymail.toml".into(),
        "5",
        config_page(CONFIG_EXAMPLE).into_bytes(),
    )?;
    Ok(written)
}

fn render(cmd: Command, section: &str) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section(section)
        .render(&mut out)
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("man page: {e}")))?;
    Ok(out)
}

/// The `sendmail` personality's flags, for its manual page (the parser is getopt-style,
/// as other MTAs': see `sendmail::parse`).
fn sendmail_command() -> Command {
    let flag = |name: &'static str, short: char, help: &'static str| {
        Arg::new(name)
            .short(short)
            .help(help)
            .action(ArgAction::SetTrue)
    };
    let value = |name: &'static str, short: char, v: &'static str, help: &'static str| {
        Arg::new(name).short(short).value_name(v).help(help)
    };
    Command::new("sendmail")
        .about("ferrymail's sendmail-compatible injection: reads a message on stdin and queues it")
        .long_about(
            "Queues the message read on stdin for the recipients named, in the spool's \
             maildrop; it is durable when the command exits 0, whether or not the daemon \
             runs. Exit codes: 0 queued, 64 usage, 65 bad message, 69 no daemon (for -q), \
             73 the maildrop cannot be written, 75 temporary failure, 78 configuration.",
        )
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(flag(
            "t",
            't',
            "Also take recipients from To:, Cc: and Bcc: (Bcc: is removed)",
        ))
        .arg(flag(
            "i",
            'i',
            "A line with a single dot does not end the message (also -oi)",
        ))
        .arg(value(
            "f",
            'f',
            "ADDR",
            "Envelope sender; -f '' or -f '<>' is the null sender (also -r)",
        ))
        .arg(value("F", 'F', "NAME", "Display name for an added From:"))
        .arg(value(
            "N",
            'N',
            "NOTIFY",
            "DSN NOTIFY for every recipient: never, or success,failure,delay",
        ))
        .arg(value("R", 'R', "RET", "DSN RET: full or hdrs"))
        .arg(value("V", 'V', "ENVID", "DSN ENVID"))
        .arg(value(
            "b",
            'b',
            "MODE",
            "m: deliver mail (the default); p: list the queue; i: check the aliases (newaliases)",
        ))
        .arg(value(
            "q",
            'q',
            "RDOMAIN",
            "Ask the daemon to flush; -qR DOMAIN for one domain",
        ))
        .arg(value("C", 'C', "FILE", "Configuration file"))
        .arg(value(
            "o",
            'o',
            "OPTION",
            "-oi is -i; other -o options are ignored, as other MTAs do",
        ))
        .arg(
            Arg::new("recipients")
                .value_name("RECIPIENT")
                .num_args(0..)
                .help("Recipients; a bare name is local: it goes by [aliases], then to admin"),
        )
}

/// The `mailq` personality, for its manual page.
fn mailq_command() -> Command {
    Command::new("mailq")
        .about("ferrymail's queue listing, as `ferrymail queue` and `sendmail -bp`")
        .disable_version_flag(true)
}

/// ferrymail.toml(5) in roff: the example configuration's comments become text, its
/// `[sections]` subsections, and every `key = value` an entry named `section.key`.
fn config_page(example: &str) -> String {
    let mut out = String::new();
    out.push_str(".TH FERRYMAIL.TOML 5 \"\" \"ferrymail\" \"File Formats\"\n");
    out.push_str(".SH NAME\nferrymail.toml \\- ferrymail configuration\n");
    out.push_str(".SH DESCRIPTION\n");
    let mut section = String::new();
    let mut pending_text: Vec<String> = Vec::new();
    let flush_text = |out: &mut String, text: &mut Vec<String>| {
        if !text.is_empty() {
            out.push_str(".PP\n");
            out.push_str(&roff_escape(&text.join(" ")));
            out.push('\n');
            text.clear();
        }
    };
    for line in example.lines() {
        let line = line.trim();
        let uncommented = line.trim_start_matches('#').trim();
        if uncommented.starts_with('[') && uncommented.ends_with(']') {
            flush_text(&mut out, &mut pending_text);
            section = uncommented.trim_matches(['[', ']']).to_owned();
            out.push_str(&format!(".SS {}\n", roff_escape(uncommented)));
        } else if let Some((key, rest)) = key_line(uncommented) {
            flush_text(&mut out, &mut pending_text);
            let (value, comment) = match rest.split_once(" # ") {
                Some((v, c)) => (v.trim(), c.trim()),
                None => (rest.trim(), ""),
            };
            let path = if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR = {}\n{}\n",
                roff_escape(&path),
                roff_escape(value),
                roff_escape(comment)
            ));
        } else if line.starts_with('#') && !uncommented.is_empty() {
            pending_text.push(uncommented.to_owned());
        }
    }
    flush_text(&mut out, &mut pending_text);
    out.push_str(".SH SEE ALSO\nferrymail(8), sendmail(8), mailq(1)\n");
    out
}

/// `key = rest` where key is a bare TOML key.
fn key_line(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some((key, rest))
}

fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key path of a configuration with every option set.
    fn key_paths() -> Vec<String> {
        let full = "hostname = \"h.example\"\nspool = \"/s\"\n[[listen]]\naddr = \"127.0.0.1:25\"\nkind = \"smtp\"\n\
            [local]\naliases_file = \"a\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n[accept]\nusers = \"u\"\n\
            [upstream]\nsmarthost = \"s.example:587\"\nca = \"ca\"\nusername = \"me\"\npassword_file = \"p\"\n\
            [[route]]\ndomains = [\"a.example\"]\n[link]\ntrigger_file = \"t\"\nevery = \"1h\"\n\
            [metrics]\nlisten = \"127.0.0.1:9325\"\n\
            [[bundle_peer]]\nnode = \"hub\"\nkey_file = \"k\"\nroutes = [\"upstream\"]\n";
        let config = crate::config::parse(full, Path::new("/etc/f.toml")).unwrap();
        let value: toml::Table = toml::from_str(&crate::config::to_toml(&config)).unwrap();
        let mut paths = Vec::new();
        for (key, v) in &value {
            match v {
                toml::Value::Table(t) => paths.extend(t.keys().map(|k| format!("{key}.{k}"))),
                toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                    for item in items {
                        let t = item.as_table().unwrap();
                        paths.extend(t.keys().map(|k| format!("{key}.{k}")));
                    }
                }
                _ => paths.push(key.clone()),
            }
        }
        paths.sort();
        paths.dedup();
        paths
    }

    #[test]
    fn the_configuration_page_lists_every_key() {
        let page = config_page(CONFIG_EXAMPLE);
        let paths = key_paths();
        assert!(paths.len() > 30, "{paths:?}");
        for path in paths {
            let escaped = roff_escape(&path);
            assert!(
                page.contains(&format!("\\fB{escaped}\\fR")),
                "{path} is not in ferrymail.toml(5)"
            );
        }
    }

    #[test]
    fn the_sendmail_page_names_flags_the_parser_takes() {
        for arg in sendmail_command().get_arguments() {
            let Some(short) = arg.get_short() else {
                continue;
            };
            let sample = match short {
                'b' => "-bm".to_owned(),
                'q' => "-q".to_owned(),
                'N' => "-Nnever".to_owned(),
                'R' => "-Rfull".to_owned(),
                'o' => "-oi".to_owned(),
                c if arg.get_action().takes_values() => format!("-{c}x@y.example"),
                c => format!("-{c}"),
            };
            let args: Vec<std::ffi::OsString> = vec![sample.clone().into(), "r@y.example".into()];
            assert!(
                super::super::sendmail::parse(&args).is_ok(),
                "{sample} is documented but refused"
            );
        }
    }

    #[test]
    fn pages_and_completions_generate() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for want in [
            "man8/ferrymail.8",
            "man8/ferrymail-serve.8",
            "man8/ferrymail-send.8",
            "man8/sendmail.8",
            "man1/mailq.1",
            "man5/ferrymail.toml.5",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        let main = std::fs::read_to_string(dir.path().join("man8/ferrymail.8")).unwrap();
        assert!(
            main.starts_with(".ie") || main.contains(".TH ferrymail 8"),
            "{}",
            &main[..200.min(main.len())]
        );
        // Every page it points to is written.
        for name in ["ferrymail-help", "ferrymail\\-help"] {
            assert!(!main.contains(name), "ferrymail(8) names {name}");
        }
        for sub in ["serve", "send", "queue", "flush", "status", "config"] {
            assert!(
                names
                    .iter()
                    .any(|n| n == &format!("man8/ferrymail-{sub}.8")),
                "{sub}"
            );
        }
        let send = std::fs::read_to_string(dir.path().join("man8/ferrymail-send.8")).unwrap();
        for flag in ["\\-t", "\\-f", "\\-N", "\\-qR"] {
            assert!(
                send.contains(flag) || send.contains(&flag.replace("\\", "")),
                "{flag} in\n{send}"
            );
        }
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ferrymail", &mut out);
            assert!(String::from_utf8(out).unwrap().contains("flush"), "{shell}");
        }
    }
}
