//! The `rmail` personality, as UUCP runs it (`uux - 'host!rmail (user@domain)'`):
//! recipients are the arguments, the message is stdin, and its first lines may be
//! UUCP's `From sender date remote from host` and `>From …` lines, which give the
//! envelope sender and are not part of the message. A sender without a domain gets the
//! last host named (the one it came from first), else `-D domain`, else our hostname;
//! a recipient `host!user` is `user@host`. The message then goes into the maildrop as
//! `sendmail -i` would take it. Exit codes are sysexits(3), which uuxqt reports back.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::exit::{self, Failure};
use crate::inject::{InjectOptions, inject};

/// The sender the `From_` lines give, and the bytes after them.
#[derive(Debug, PartialEq, Eq)]
struct Uucp {
    sender: Option<String>,
    rest: Vec<u8>,
}

/// Reads `From ` / `>From ` lines from the top of `input` (at most 100, 1 KiB each).
fn from_lines(input: &mut dyn BufRead) -> std::io::Result<Uucp> {
    let mut user: Option<String> = None;
    let mut hosts: Vec<String> = Vec::new();
    for _ in 0..100 {
        let mut line = Vec::new();
        (&mut *input).take(1024).read_until(b'\n', &mut line)?;
        let text = String::from_utf8_lossy(&line);
        let Some(rest) = text
            .strip_prefix("From ")
            .or_else(|| text.strip_prefix(">From "))
        else {
            return Ok(Uucp {
                sender: sender(user, &hosts),
                rest: line,
            });
        };
        let mut words = rest.split_whitespace();
        user = words.next().map(str::to_owned);
        let words: Vec<&str> = words.collect();
        if let [.., "remote", "from", host] = words.as_slice() {
            hosts.push((*host).to_owned());
        }
    }
    Ok(Uucp {
        sender: sender(user, &hosts),
        rest: Vec::new(),
    })
}

fn sender(user: Option<String>, hosts: &[String]) -> Option<String> {
    let user = user?;
    let user = user.rsplit('!').next().unwrap_or(&user).to_owned();
    if user.contains('@') || user.is_empty() {
        return Some(user);
    }
    Some(match hosts.last() {
        Some(host) => format!("{user}@{host}"),
        None => user,
    })
}

/// `(user@domain)`, `host!user` or `a!b!user` as an address.
fn recipient(arg: &str) -> String {
    let arg = arg.trim_start_matches('(').trim_end_matches(')');
    if arg.contains('@') {
        return arg.to_owned();
    }
    let parts: Vec<&str> = arg.split('!').collect();
    match parts.as_slice() {
        [.., host, user] => format!("{user}@{host}"),
        _ => arg.to_owned(),
    }
}

pub fn run(args: &[OsString], config: Option<&Path>) -> Result<(), Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    let mut args: Vec<String> = args
        .iter()
        .map(|a| {
            a.clone()
                .into_string()
                .map_err(|_| usage("arguments must be valid UTF-8".into()))
        })
        .collect::<Result<_, _>>()?;
    let mut domain = None;
    while let Some(first) = args.first().cloned() {
        match first.as_str() {
            "-T" => {
                args.remove(0);
            }
            "-D" if args.len() > 1 => {
                domain = Some(args[1].clone());
                args.drain(..2);
            }
            f if f.starts_with('-') => return Err(usage(format!("unknown option {f}"))),
            _ => break,
        }
    }
    if args.is_empty() {
        return Err(usage("usage: rmail [-D domain] recipient...".into()));
    }
    let stdin = std::io::stdin();
    let mut input = BufReader::with_capacity(64 * 1024, stdin.lock());
    let uucp = from_lines(&mut input)
        .map_err(|e| Failure::new(exit::IOERR, format!("reading the message: {e}")))?;
    let sender = uucp
        .sender
        .map(|s| match (&domain, s.contains('@') || s.is_empty()) {
            (Some(d), false) => format!("{s}@{d}"),
            _ => s,
        });
    let opts = InjectOptions {
        sender,
        ignore_dots: true,
        recipients: args.iter().map(|a| recipient(a)).collect(),
        ..InjectOptions::default()
    };
    let mut rest = std::io::Cursor::new(uucp.rest).chain(input);
    let mut rest = BufReader::new(&mut rest);
    super::sendmail::with_site(config, |site| inject(&mut rest, &opts, site).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uucp_from_lines_give_the_sender_and_are_not_part_of_the_message() {
        let text = b"From joe Tue Dec  1 10:00:00 2026 remote from hubhost\n\
            >From joe Tue Dec  1 09:00:00 2026 remote from origin.example\n\
            Subject: hi\n\nbody\n";
        let u = from_lines(&mut &text[..]).unwrap();
        assert_eq!(u.sender.as_deref(), Some("joe@origin.example"));
        assert_eq!(u.rest, b"Subject: hi\n");
        let u = from_lines(&mut &b"From a@b.example Tue Dec  1 10:00:00 2026\nx\n"[..]).unwrap();
        assert_eq!(u.sender.as_deref(), Some("a@b.example"));
        let u = from_lines(&mut &b"Subject: no from line\n"[..]).unwrap();
        assert_eq!(u.sender, None);
        assert_eq!(u.rest, b"Subject: no from line\n");
    }

    #[test]
    fn bang_paths_and_uux_parentheses_become_addresses() {
        assert_eq!(recipient("(user@field.example)"), "user@field.example");
        assert_eq!(recipient("hub!user"), "user@hub");
        assert_eq!(recipient("a!b.example!user"), "user@b.example");
        assert_eq!(recipient("root"), "root");
    }
}
