//! `ferrymail hash-password`: reads a password on stdin (prompting twice, without echo,
//! on a terminal) and prints its argon2id hash for an `accept.users` line.

use std::io::{BufRead, IsTerminal, Read, Write};

use crate::exit::{self, Failure};
use crate::server::auth::hash_password;

pub fn run() -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        if prompt("Again: ")? != first {
            return Err(Failure::new(exit::DATAERR, "the passwords differ"));
        }
        first
    } else {
        read_line(&mut stdin.lock())?
    };
    if password.is_empty() {
        return Err(Failure::new(exit::USAGE, "empty password"));
    }
    let hash = hash_password(&password)
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("hashing: {e}")))?;
    println!("{hash}");
    Ok(())
}

fn read_line(input: &mut impl BufRead) -> Result<String, Failure> {
    let mut line = String::new();
    input
        .take(4096)
        .read_line(&mut line)
        .map_err(|e| Failure::new(exit::IOERR, format!("reading the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Prompts on stderr with terminal echo off, restoring it afterwards.
fn prompt(text: &str) -> Result<String, Failure> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
    }
    let line = read_line(&mut stdin.lock());
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, saved);
    }
    eprintln!();
    line
}
