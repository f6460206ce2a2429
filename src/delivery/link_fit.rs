//! Fitting what is written to a long thin link: the writer keeps at most `GAIN × rate ×
//! round trip` bytes unacknowledged in the socket (at least `FLOOR`), from what the
//! kernel says of the connection (TCP_INFO, tcp(7): the smallest round trip seen, and
//! the bytes acknowledged, whose highest rate over a whole round trip is the link's;
//! SIOCOUTQ: bytes written and not yet acknowledged). The kernel's congestion control
//! keeps more in flight than a thin link holds (BBR probes at twice the bandwidth-delay
//! product; loss-based ones fill the bottleneck queue until it drops), and a drop there
//! costs a round trip or more; holding back here keeps the bottleneck queue under half
//! a round trip's worth of bytes while the link stays busy. Until the link first shows
//! a queue, the allowance grows faster (`STARTUP_GAIN`), as TCP's slow start does. Such
//! a connection uses Reno (`CONGESTION_CONTROL`), and a run of small writes goes out in
//! full segments (`Cork`). Only paths of `MIN_RTT` or more are held back: on a short
//! path, the queue a sender builds drains in microseconds, and waiting for
//! acknowledgements would cost more.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Content larger than this is written a slice at a time, each let through on its own:
/// the kernel's window, grown while the writer held back, would send a whole large
/// message at once and overflow the bottleneck queue.
pub const SLICE: usize = 16 << 10;
/// Unacknowledged bytes always allowed: a little more than TCP's initial window, so a
/// fresh connection is never held back before the kernel has measured anything.
pub const FLOOR: usize = 48 << 10;
/// In flight over what the link delivers in a round trip: 1.0 is exactly full; the
/// rest lets the measured rate grow (what is held back limits what is measured) and
/// keeps a thin queue at the bottleneck. Measured on a 600 ms, 1 Mbit/s link with a
/// 64 KiB queue: 1.2 dropped nothing; 1.5 dropped 25 packets and was slower; a
/// start-up at 2.0 until the rate stops growing dropped 11 to 31. Sized from the
/// kernel's per-ACK delivery rate instead, which read up to 1.15 Mbit/s on that link
/// when ACKs came bunched, 400 typical messages lost 20 packets.
const GAIN: f64 = 1.2;
/// The gain until the link first shows a queue (`QUEUE_SHOWS`) or loses a packet. What
/// is held back limits what is measured, and the measured round trip runs over the
/// shortest, so at `GAIN` the allowance grows by a tenth a round trip: from `FLOOR` to
/// a 600 ms, 1 Mbit/s link's worth took four seconds, the link a quarter idle. At 1.7
/// it takes two round trips, and in the round trip before the queue shows the writer
/// adds at most 0.7 of the link's worth to the queue (a 64 KiB queue on that link holds
/// 0.9 of it; nothing was dropped).
const STARTUP_GAIN: f64 = 1.7;
/// The link shows a queue: the smoothed round trip is this far over the shortest.
const QUEUE_SHOWS: f64 = 1.25;
/// What a held-back connection uses. The writer keeps in flight no more than the link
/// holds, so a loss-based control never reaches the queue's limit, and Reno stays in
/// slow start, its window always twice what is in flight: the allowance alone sets the
/// pace. CUBIC leaves slow start at the first 16 ms of queueing (HyStart), far below a
/// long link's worth, then grows slowly: on the 600 ms link it carried two thirds of
/// the rate for the first four seconds. BBR stops to drain the path every ten seconds
/// to find the round trip again (PROBE_RTT: four packets in flight for a round trip):
/// 1.40× the limit and 20 drops on 400 typical messages, against 1.29× with CUBIC.
/// Reno is also one every process may choose (tcp(7): others need CAP_NET_ADMIN unless
/// `tcp_allowed_congestion_control` lists them).
const CONGESTION_CONTROL: &str = "reno";
/// What a held-back connection goes over to once the link loses a packet: Reno and
/// CUBIC halve their window at each loss, which on a noisy link (random loss, as radio
/// and satellite have) leaves it idle; BBR does not take loss for congestion. Measured
/// at 1 % random loss on the 600 ms link: 200 letters took CUBIC 21.0 s (2.2× the
/// limit).
const ON_NOISE: &str = "bbr";
/// `tcpi_state` of an established connection (linux/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;
/// Shorter paths are not held back.
pub const MIN_RTT: Duration = Duration::from_millis(20);

pub struct LinkFit {
    fd: RawFd,
    /// The highest rate acknowledged over a round trip, bytes per second.
    rate: f64,
    min_rtt: Duration,
    /// Bytes acknowledged (TCP_INFO's `bytes_acked`) when last looked, over the last
    /// round trip or so.
    acked: VecDeque<(Instant, u64)>,
    /// The link lost a packet this writer did not overflow it with: it is noisy, and
    /// the connection went over to `ON_NOISE`.
    noisy: bool,
    /// Segments the connection had sent again before the fit began (TCP_INFO's
    /// `total_retrans`): a SYN sent again because the round trip is longer than the
    /// first retransmission timeout (one second, RFC 6298 §2.1) is not a lossy link.
    retrans_before: u32,
    /// The link has not yet shown a queue or lost a packet: `STARTUP_GAIN` applies.
    starting: bool,
}

impl LinkFit {
    /// For the TCP socket `fd`, whose round trip (EHLO's) was `rtt`; `None` for a short
    /// path.
    pub fn new(fd: RawFd, rtt: Duration) -> Option<LinkFit> {
        if rtt >= MIN_RTT {
            set_congestion_control(fd, CONGESTION_CONTROL);
        }
        (rtt >= MIN_RTT).then_some(LinkFit {
            fd,
            rate: 0.0,
            min_rtt: rtt,
            acked: VecDeque::new(),
            noisy: false,
            retrans_before: tcp_info(fd).map_or(0, |i| i.tcpi_total_retrans),
            starting: true,
        })
    }

    /// Whether `len` more bytes may be written now: they fit under the target, or
    /// nothing is waiting for an acknowledgement (a message larger than the target
    /// still goes, alone).
    pub(crate) fn admits(&mut self, len: usize) -> bool {
        // A connection no longer established (reset, destroyed) keeps its count of
        // unacknowledged bytes forever: let the write go, and fail.
        let Some(info) = tcp_info(self.fd).filter(|i| i.tcpi_state == TCP_ESTABLISHED) else {
            return true;
        };
        let Some(queued) = outq(self.fd) else {
            return true;
        };
        if queued == 0 {
            return true;
        }
        self.learn(&info);
        queued + len <= self.allowed()
    }

    /// The unacknowledged bytes allowed now.
    #[cfg(test)]
    fn target(&mut self) -> usize {
        if let Some(info) = tcp_info(self.fd) {
            self.learn(&info);
        }
        self.allowed()
    }

    /// Takes what the kernel says of the connection now.
    fn learn(&mut self, info: &libc::tcp_info) {
        if info.tcpi_min_rtt > 0 {
            let min_rtt = Duration::from_micros(u64::from(info.tcpi_min_rtt));
            self.min_rtt = self.min_rtt.min(min_rtt);
        }
        self.sample(Instant::now(), info.tcpi_bytes_acked);
        tracing::trace!(
            cwnd = info.tcpi_snd_cwnd,
            ssthresh = info.tcpi_snd_ssthresh,
            rtt_us = info.tcpi_rtt,
            rate = self.rate as u64,
            allowed = self.allowed(),
            min_rtt_us = self.min_rtt.as_micros() as u64,
            starting = self.starting,
            "link fit"
        );
        let srtt = Duration::from_micros(u64::from(info.tcpi_rtt));
        if srtt.as_secs_f64() > QUEUE_SHOWS * self.min_rtt.as_secs_f64()
            || info.tcpi_total_retrans > self.retrans_before
        {
            self.starting = false;
        }
        if info.tcpi_total_retrans > self.retrans_before && !self.noisy {
            // Held under what the link holds, the queue did not drop it: noise.
            self.noisy = true;
            set_congestion_control(self.fd, ON_NOISE);
        }
    }

    /// The unacknowledged bytes allowed, from what was learnt.
    fn allowed(&self) -> usize {
        let gain = if self.starting { STARTUP_GAIN } else { GAIN };
        ((gain * self.rate * self.min_rtt.as_secs_f64()) as usize).max(FLOOR)
    }

    /// Takes the bytes acknowledged by `now`: the rate is the highest seen over any
    /// whole round trip. (The kernel's own per-ACK delivery rate runs above the link's
    /// when ACKs arrive bunched, and a target sized from it overflows the queue.)
    fn sample(&mut self, now: Instant, acked: u64) {
        while self.acked.len() >= 2 && now.duration_since(self.acked[1].0) >= self.min_rtt {
            self.acked.pop_front();
        }
        if let Some(&(then, before)) = self.acked.front() {
            let span = now.duration_since(then);
            if span >= self.min_rtt {
                let rate = acked.saturating_sub(before) as f64 / span.as_secs_f64();
                self.rate = self.rate.max(rate);
            }
        }
        self.acked.push_back((now, acked));
    }

    /// How long to wait before asking again: a small part of a round trip.
    fn poll(&self) -> Duration {
        (self.min_rtt / 16).clamp(Duration::from_millis(2), Duration::from_millis(50))
    }

    /// Waits until `len` more bytes may be written; `false` if `give_up` said so first.
    pub async fn room_for(&mut self, len: usize, give_up: impl Fn() -> bool) -> bool {
        while !self.admits(len) {
            if give_up() {
                return false;
            }
            tokio::time::sleep(self.poll()).await;
        }
        true
    }
}

/// Holds a run of small writes to full segments (tcp(7) TCP_CORK): a transaction of a
/// few KiB written alone goes as a few full segments and a short one, and on a long
/// link a window counted in segments then carries less. What is held goes at `push`,
/// when dropped, and at the latest after the kernel's 200 ms.
pub struct Cork {
    fd: RawFd,
}

impl Cork {
    pub fn new(fit: &LinkFit) -> Cork {
        set_cork(fit.fd, true);
        Cork { fd: fit.fd }
    }

    /// Sends what is held, before the writer waits for anything but the link.
    pub fn push(&self) {
        set_cork(self.fd, false);
        set_cork(self.fd, true);
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        set_cork(self.fd, false);
    }
}

/// Holds partial segments back, or lets them go (tcp(7) TCP_CORK).
fn set_cork(fd: RawFd, on: bool) {
    set_tcp_option(fd, libc::TCP_CORK, &libc::c_int::from(on).to_ne_bytes());
}

/// Sets the connection's congestion control (tcp(7) TCP_CONGESTION); a kernel without
/// it keeps its default.
fn set_congestion_control(fd: RawFd, name: &str) {
    set_tcp_option(fd, libc::TCP_CONGESTION, name.as_bytes());
}

/// Sets an IPPROTO_TCP option to `value`; a failure is only logged (the connection
/// works on as it was).
fn set_tcp_option(fd: RawFd, option: libc::c_int, value: &[u8]) {
    // SAFETY: `fd` is an open TCP socket for the call; `value` is a valid buffer of the
    // length given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            option,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(option, error = %std::io::Error::last_os_error(), "TCP option not set");
    }
}

fn tcp_info(fd: RawFd) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain data, valid zeroed; getsockopt writes at most `len`
    // bytes into it, and `fd` is a socket the caller owns for the call's duration.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc == 0).then_some(info)
    }
}

/// Bytes in the socket's send queue not yet acknowledged (SIOCOUTQ, tcp(7)).
fn outq(fd: RawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int; `fd` is a socket the caller owns.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    (rc == 0).then_some(queued.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_short_path_is_not_held_back_and_a_long_one_starts_at_the_floor() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(LinkFit::new(client.as_raw_fd(), Duration::from_millis(1)).is_none());
        let mut fit = LinkFit::new(client.as_raw_fd(), Duration::from_millis(600)).unwrap();
        assert_eq!(
            fit.poll(),
            Duration::from_micros(37_500),
            "a 16th of the round trip"
        );
        assert!(fit.admits(1 << 20), "nothing unacknowledged: anything goes");
        assert!(fit.target() >= FLOOR);
        assert_eq!(
            fit.poll(),
            Duration::from_millis(2),
            "loopback's own round trip, floored"
        );
        let mut name = [0u8; 16];
        let mut len = name.len() as libc::socklen_t;
        // SAFETY: TCP_CONGESTION writes at most `len` bytes of the name.
        let rc = unsafe {
            libc::getsockopt(
                client.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                name.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        let name = String::from_utf8_lossy(&name[..len as usize]);
        let available =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                .unwrap_or_default();
        if available
            .split_whitespace()
            .any(|n| n == CONGESTION_CONTROL)
        {
            assert_eq!(name.trim_end_matches('\0'), CONGESTION_CONTROL);
        }
    }

    fn info(srtt_ms: u32, retrans: u32) -> libc::tcp_info {
        // SAFETY: tcp_info is plain data, valid zeroed.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        info.tcpi_rtt = srtt_ms * 1000;
        info.tcpi_total_retrans = retrans;
        info
    }

    #[test]
    fn the_allowance_grows_fast_until_the_link_shows_a_queue_or_loses_a_packet() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        for (srtt_ms, retrans, still_starting) in [(700, 0, true), (760, 0, false), (600, 1, false)]
        {
            let mut fit = LinkFit::new(client.as_raw_fd(), Duration::from_millis(600)).unwrap();
            fit.rate = 125_000.0;
            let link_worth = 125_000.0 * 0.6;
            assert_eq!(fit.allowed(), (STARTUP_GAIN * link_worth) as usize);
            fit.learn(&info(srtt_ms, retrans));
            let gain = if still_starting { STARTUP_GAIN } else { GAIN };
            assert_eq!(fit.starting, still_starting, "{srtt_ms} ms, {retrans} lost");
            assert_eq!(fit.allowed(), (gain * link_worth) as usize);
            // Once over, it stays over.
            fit.learn(&info(600, 0));
            assert_eq!(fit.starting, still_starting);
        }
    }

    #[test]
    fn segments_sent_again_before_the_fit_began_are_not_noise() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut fit = LinkFit::new(client.as_raw_fd(), Duration::from_millis(1200)).unwrap();
        // A SYN sent again on a 1.2 s path, before the fit began.
        fit.retrans_before = 1;
        fit.learn(&info(1200, 1));
        assert!(fit.starting && !fit.noisy);
        fit.learn(&info(1200, 2));
        assert!(
            !fit.starting && fit.noisy,
            "a loss since the fit began is noise"
        );
    }

    #[test]
    fn a_cork_holds_only_while_a_run_of_writes_goes_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let corked = || {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: TCP_CORK writes one int.
            let rc = unsafe {
                libc::getsockopt(
                    client.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_CORK,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            value != 0
        };
        let fit = LinkFit::new(client.as_raw_fd(), Duration::from_millis(600)).unwrap();
        assert!(!corked());
        let cork = Cork::new(&fit);
        assert!(corked());
        cork.push();
        assert!(corked(), "pushed, and held again for the next writes");
        drop(cork);
        assert!(!corked(), "let go with the run");
    }

    #[test]
    fn the_rate_is_taken_over_whole_round_trips_so_bunched_acks_do_not_inflate_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut fit = LinkFit::new(client.as_raw_fd(), Duration::from_millis(600)).unwrap();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // 125,000 bytes a second, acknowledged in bursts every 100 ms, one of them
        // bunched: 30,000 bytes in 10 ms.
        let mut acked = 0u64;
        for step in 0..20u64 {
            acked += if step == 7 { 30_000 } else { 12_500 };
            fit.sample(at(step * 100 + if step == 7 { 10 } else { 0 }), acked);
        }
        assert!(fit.rate > 100_000.0 && fit.rate < 160_000.0, "{}", fit.rate);
        let before = fit.rate;
        fit.sample(at(1_950), acked + 50_000);
        assert!(fit.rate < before * 1.5, "a burst alone is not a round trip");
    }
}
