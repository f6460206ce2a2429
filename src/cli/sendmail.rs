//! The `sendmail` personality (`ferrymail send`, or the binary run as `sendmail`): a
//! getopt-style parser for the flags other MTAs accept, then injection, a queue listing
//! (`-bp`) or a flush (`-q`, `-qR DOMAIN`). Unknown `-o` options are ignored, as other
//! MTAs do; other unknown flags are usage errors (exit 64).

use std::ffi::OsString;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::exit::{self, Failure};
use crate::inject::{InjectOptions, Site, inject};
use crate::smtp::{Notify, Ret};
use crate::spool::{Layout, RealFs};

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Inject(InjectOptions),
    ListQueue,
    Flush {
        domain: Option<String>,
    },
    /// `-bi` (newaliases): check the aliases; the daemon reads them itself.
    CheckAliases,
    /// `-bS`: batched SMTP on stdin.
    Batch,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub action: Action,
    pub config: Option<PathBuf>,
}

pub fn parse(args: &[OsString]) -> Result<Invocation, Failure> {
    let usage = |m: String| Failure::new(exit::USAGE, m);
    let mut args: Vec<String> = args
        .iter()
        .map(|a| {
            a.clone()
                .into_string()
                .map_err(|_| usage("arguments must be valid UTF-8".into()))
        })
        .collect::<Result<_, _>>()?;
    args.reverse(); // pop() takes the next argument
    let mut opts = InjectOptions::default();
    let mut action = None;
    let mut config = None;
    while let Some(arg) = args.pop() {
        if arg == "--" {
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            args.push(arg);
            break;
        }
        let flags = arg[1..].char_indices();
        for (i, flag) in flags {
            let rest = &arg[1 + i + flag.len_utf8()..];
            let mut value = || -> Result<String, Failure> {
                if !rest.is_empty() {
                    Ok(rest.to_owned())
                } else {
                    args.pop()
                        .ok_or_else(|| usage(format!("-{flag} needs a value")))
                }
            };
            match flag {
                't' => opts.extract_recipients = true,
                'i' => opts.ignore_dots = true,
                'v' | 'n' | 'U' | 'm' | 'x' => {}
                'f' | 'r' => opts.sender = Some(value()?),
                'F' => opts.full_name = Some(value()?),
                'N' => opts.notify = Some(parse_notify(&value()?)?),
                'R' => opts.ret = Some(parse_ret(&value()?)?),
                'V' => opts.envid = Some(value()?),
                'C' => config = Some(PathBuf::from(value()?)),
                'B' | 'L' | 'h' | 'O' | 'X' => {
                    value()?;
                }
                'o' => {
                    if value()? == "i" {
                        opts.ignore_dots = true;
                    }
                }
                'b' => {
                    action = Some(match value()?.as_str() {
                        "m" => None,
                        "p" => Some(Action::ListQueue),
                        "i" => Some(Action::CheckAliases),
                        "S" => Some(Action::Batch),
                        "s" => {
                            return Err(usage(
                                "-bs (SMTP on stdin) is not supported; use the SMTP listener, \
                                 or -bS for a batch"
                                    .into(),
                            ));
                        }
                        "d" => {
                            return Err(usage(
                                "-bd is not supported; run `ferrymail serve`".into(),
                            ));
                        }
                        other => return Err(usage(format!("-b{other} is not supported"))),
                    });
                }
                'q' => {
                    let domain = match rest.strip_prefix('R') {
                        Some("") => Some(
                            args.pop()
                                .ok_or_else(|| usage("-qR needs a domain".into()))?,
                        ),
                        Some(d) => Some(d.to_owned()),
                        None => None,
                    };
                    if let Some(d) = &domain
                        && !crate::smtp::domain::is_domain(d)
                    {
                        return Err(usage(format!("-qR {d:?}: not a domain")));
                    }
                    action = Some(Some(Action::Flush { domain }));
                }
                other => return Err(usage(format!("unknown option -{other}"))),
            }
            if matches!(
                flag,
                'f' | 'r'
                    | 'F'
                    | 'N'
                    | 'R'
                    | 'V'
                    | 'C'
                    | 'B'
                    | 'L'
                    | 'h'
                    | 'O'
                    | 'X'
                    | 'o'
                    | 'b'
                    | 'q'
            ) {
                break; // the rest of this argument was the value
            }
        }
    }
    args.reverse();
    opts.recipients = args;
    let action = action.flatten().unwrap_or(Action::Inject(opts));
    Ok(Invocation { action, config })
}

fn parse_notify(s: &str) -> Result<Notify, Failure> {
    Notify::parse(s).ok_or_else(|| {
        Failure::new(
            exit::USAGE,
            format!("-N {s:?}: use never, or a list of success, failure, delay"),
        )
    })
}

fn parse_ret(s: &str) -> Result<Ret, Failure> {
    match s.to_ascii_lowercase().as_str() {
        "full" => Ok(Ret::Full),
        "hdrs" => Ok(Ret::Hdrs),
        _ => Err(Failure::new(
            exit::USAGE,
            format!("-R {s:?}: use full or hdrs"),
        )),
    }
}

/// `newaliases`: there is no database to build (the daemon reads `[aliases]` and
/// `local.aliases_file` when it starts and on reload), so check them and say so.
fn check_aliases(config: Option<&Path>) -> Result<(), Failure> {
    let loaded = super::load_config(config)?;
    let (identity, warnings) = crate::identity::Identity::load(&loaded.config)
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    for warning in warnings {
        eprintln!("ferrymail: warning: {warning}");
    }
    println!(
        "ferrymail: {} alias(es) read; the daemon reads them when it starts and on reload (SIGHUP)",
        identity.local.alias_count()
    );
    Ok(())
}

pub fn run(args: &[OsString], config: Option<&Path>) -> Result<(), Failure> {
    let invocation = parse(args)?;
    let config = invocation.config.as_deref().or(config);
    match invocation.action {
        Action::ListQueue => super::queue::list(config, false),
        Action::Flush { domain } => super::flush::request_flush(config, domain),
        Action::CheckAliases => check_aliases(config),
        Action::Batch => with_site(config, |site| {
            let stdin = std::io::stdin();
            let mut input = BufReader::with_capacity(64 * 1024, stdin.lock());
            let batch = crate::batch::inject_batch(&mut input, site)?;
            for fault in &batch.faults {
                eprintln!("sendmail -bS: line {}: {}", fault.line, fault.message);
            }
            match batch.faults.len() {
                0 => Ok(()),
                n => Err(Failure::new(
                    exit::DATAERR,
                    format!(
                        "{} message(s) queued; {n} transaction(s) refused (above)",
                        batch.queued
                    ),
                )),
            }
        }),
        Action::Inject(opts) => with_site(config, |site| {
            let stdin = std::io::stdin();
            let mut input = BufReader::with_capacity(64 * 1024, stdin.lock());
            inject(&mut input, &opts, site).map(|_| ())
        }),
    }
}

/// Runs `f` with what injecting into the maildrop needs, the maildrop made if missing.
pub(super) fn with_site(
    config: Option<&Path>,
    f: impl FnOnce(&Site<'_>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let loaded = super::load_config(config)?;
    let layout = Layout::new(&loaded.config.spool);
    for dir in [&layout.maildrop_tmp, &layout.maildrop_new] {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::new(
                    exit::CANTCREAT,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        }
    }
    let login = login_name();
    let site = Site {
        hostname: &loaded.config.hostname,
        login: &login,
        max_message_size: loaded.config.accept.max_message_size.0,
        fs: &RealFs,
        layout: &layout,
    };
    f(&site)
}

/// The invoking user's login name, from the password database (not `$USER`, which the
/// caller controls); `uid<N>` when there is no entry.
fn login_name() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pwd's fields.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc == 0 && !result.is_null() {
        // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in buf.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        if let Ok(name) = name.to_str()
            && !name.is_empty()
            && crate::smtp::Mailbox::parse(&format!("{name}@x.invalid")).is_ok()
        {
            return name.to_owned();
        }
    }
    format!("uid{uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, Failure> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn flags() {
        let inv = p(&["-oi", "-f", "a@b.c", "-FJo Doe", "-t", "x@y.z"]).unwrap();
        let Action::Inject(o) = inv.action else {
            panic!()
        };
        assert!(o.ignore_dots && o.extract_recipients);
        assert_eq!(o.sender.as_deref(), Some("a@b.c"));
        assert_eq!(o.full_name.as_deref(), Some("Jo Doe"));
        assert_eq!(o.recipients, ["x@y.z"]);

        let Action::Inject(o) = p(&["-ti", "-fme@x.y", "--", "r@x.y"]).unwrap().action else {
            panic!()
        };
        assert!(o.ignore_dots && o.extract_recipients);
        assert_eq!(o.sender.as_deref(), Some("me@x.y"));

        assert_eq!(p(&["-bp"]).unwrap().action, Action::ListQueue);
        assert_eq!(p(&["-q"]).unwrap().action, Action::Flush { domain: None });
        assert_eq!(
            p(&["-qR", "ex.org"]).unwrap().action,
            Action::Flush {
                domain: Some("ex.org".into())
            }
        );
        assert_eq!(
            p(&["-qRex.org"]).unwrap().action,
            Action::Flush {
                domain: Some("ex.org".into())
            }
        );
        assert_eq!(
            p(&["-C", "/x.toml", "-bp"]).unwrap().config,
            Some(PathBuf::from("/x.toml"))
        );
        assert!(matches!(
            p(&["-oem", "-odi", "a@b.c"]).unwrap().action,
            Action::Inject(_)
        ));
        for bad in [
            &["-Z"][..],
            &["-bs"],
            &["-f"],
            &["-qR", "../x"],
            &["-N", "sometimes"],
        ] {
            assert_eq!(p(bad).unwrap_err().code, exit::USAGE, "{bad:?}");
        }
    }
}
