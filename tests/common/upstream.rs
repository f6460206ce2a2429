//! A scripted upstream SMTP server for black-box tests: it answers each RCPT as the test
//! says (by address), accepts DATA (and BDAT when asked to offer CHUNKING), records
//! every message and ETRN request, and counts connections and SMTP sessions (those that
//! said EHLO; a link probe only connects). Plain threads, loopback only; it stops when
//! dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One message as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    /// The MAIL and accepted RCPT commands as sent, parameters and all.
    pub commands: Vec<String>,
}

pub type Rule = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The extensions it offers besides PIPELINING and 8BITMIME.
#[derive(Clone, Copy, Debug, Default)]
pub struct Offer {
    pub chunking: bool,
    pub dsn: bool,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub messages: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<AtomicUsize>,
    sessions: Arc<AtomicUsize>,
    etrns: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// Listens on `addr` (port 0 for any); `rcpt` gives the reply to each RCPT address.
    pub fn start(addr: &str, chunking: bool, rcpt: Rule) -> Upstream {
        Upstream::offering(
            addr,
            Offer {
                chunking,
                dsn: false,
            },
            rcpt,
        )
    }

    /// Accepts every recipient and offers DSN (RFC 3461): NOTIFY, ORCPT, RET and ENVID
    /// are passed on to it.
    pub fn with_dsn(addr: &str) -> Upstream {
        let offer = Offer {
            chunking: false,
            dsn: true,
        };
        Upstream::offering(addr, offer, Arc::new(|_| "250 2.1.5 ok".to_owned()))
    }

    pub fn offering(addr: &str, offer: Offer, rcpt: Rule) -> Upstream {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let sessions = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, c, s) = (messages.clone(), connections.clone(), stop.clone());
        let e = sessions.clone();
        let etrns = Arc::new(Mutex::new(Vec::new()));
        let t = etrns.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        let (m, rcpt, e, t) = (m.clone(), rcpt.clone(), e.clone(), t.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, offer, &rcpt, &m, &e, &t);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Upstream {
            addr,
            messages,
            connections,
            sessions,
            etrns,
            stop,
        }
    }

    /// The ETRN commands it was sent, as sent.
    pub fn etrns(&self) -> Vec<String> {
        self.etrns.lock().unwrap().clone()
    }

    /// Connections that began an SMTP session (said EHLO or HELO).
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Accepts every recipient.
    pub fn accepting(addr: &str) -> Upstream {
        Upstream::start(addr, false, Arc::new(|_| "250 2.1.5 ok".to_owned()))
    }

    pub fn received(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves one SMTP session on `stream`, a connection made the other way (an ODMR
/// turn): greets, then takes what comes, each RCPT answered by `rcpt`.
pub fn serve_turned(stream: TcpStream, rcpt: Rule) -> Vec<Received> {
    let messages = Mutex::new(Vec::new());
    let _ = serve(
        stream,
        Offer {
            chunking: true,
            dsn: false,
        },
        &rcpt,
        &messages,
        &AtomicUsize::new(0),
        &Mutex::new(Vec::new()),
    );
    messages.into_inner().unwrap()
}

fn serve(
    stream: TcpStream,
    offer: Offer,
    rcpt: &Rule,
    messages: &Mutex<Vec<Received>>,
    sessions: &AtomicUsize,
    etrns: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(b"220 fake.test ESMTP\r\n")?;
    let (mut from, mut rcpts) = (String::new(), Vec::new());
    let mut commands = Vec::new();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            sessions.fetch_add(1, Ordering::Relaxed);
        }
        let reply = if upper.starts_with("EHLO") {
            let chunk = if offer.chunking {
                "250-CHUNKING\r\n"
            } else {
                ""
            };
            let dsn = if offer.dsn { "250-DSN\r\n" } else { "" };
            format!("250-fake.test\r\n250-PIPELINING\r\n{chunk}{dsn}250 8BITMIME")
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&line);
            rcpts.clear();
            commands = vec![line.clone()];
            "250 2.1.0 ok".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            let a = address(&line);
            let r = rcpt(&a);
            if r.starts_with('2') {
                rcpts.push(a);
                commands.push(line.clone());
            }
            r
        } else if upper == "DATA" {
            out.write_all(b"354 go ahead\r\n")?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if input.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                let l = if l.starts_with(b"..") {
                    &l[1..]
                } else {
                    &l[..]
                };
                data.extend_from_slice(l);
            }
            record(messages, &from, &rcpts, &commands, data)
        } else if let Some(rest) = upper.strip_prefix("BDAT ") {
            let n: usize = rest.split(' ').next().unwrap_or("0").parse().unwrap_or(0);
            let mut data = vec![0u8; n];
            input.read_exact(&mut data)?;
            record(messages, &from, &rcpts, &commands, data)
        } else if upper.starts_with("ETRN") {
            etrns.lock().unwrap().push(line.clone());
            "250 ok, queuing started".to_owned()
        } else if upper == "QUIT" {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            "250 ok".to_owned()
        };
        out.write_all(format!("{reply}\r\n").as_bytes())?;
    }
}

fn record(
    messages: &Mutex<Vec<Received>>,
    from: &str,
    rcpts: &[String],
    commands: &[String],
    data: Vec<u8>,
) -> String {
    if rcpts.is_empty() {
        return "554 5.5.1 no valid recipients".to_owned();
    }
    messages.lock().unwrap().push(Received {
        from: from.to_owned(),
        rcpts: rcpts.to_vec(),
        data,
        commands: commands.to_vec(),
    });
    "250 2.0.0 queued".to_owned()
}

fn address(line: &str) -> String {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(a, _)| a.to_owned())
        .unwrap_or_default()
}
