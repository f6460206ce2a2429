//! Fitting what is written to a long thin link: the writer keeps at most `GAIN × rate ×
//! round trip` bytes unacknowledged in the socket (at least `FLOOR`), from what the
//! kernel says of the connection (TCP_INFO, tcp(7): the smallest round trip seen and
//! the highest delivery rate; SIOCOUTQ: bytes written and not yet acknowledged). The
//! kernel's congestion control keeps more in flight than a thin link holds (BBR probes
//! at twice the bandwidth-delay product; loss-based ones fill the bottleneck queue until
//! it drops), and a drop there costs a round trip or more; holding back here keeps the
//! bottleneck queue under half a round trip's worth of bytes while the link stays busy.
//! Only paths of `MIN_RTT` or more are held back: on a short path, the queue a sender
//! builds drains in microseconds, and waiting for acknowledgements would cost more.

use std::os::fd::RawFd;
use std::time::Duration;

/// Unacknowledged bytes always allowed: a little more than TCP's initial window, so a
/// fresh connection is never held back before the kernel has measured anything.
pub const FLOOR: usize = 48 << 10;
/// In flight over what the link delivers in a round trip: 1.0 is exactly full; the
/// rest lets the measured rate grow (what is held back limits what is measured) and
/// keeps a thin queue at the bottleneck. Measured on a 600 ms, 1 Mbit/s link with a
/// 64 KiB queue: 1.2 dropped nothing; 1.5 dropped 25 packets and was slower; a
/// start-up at 2.0 until the rate stops growing dropped 11 to 31.
const GAIN: f64 = 1.2;
/// Shorter paths are not held back.
pub const MIN_RTT: Duration = Duration::from_millis(20);

pub struct LinkFit {
    fd: RawFd,
    /// The highest delivery rate the kernel reported, bytes per second.
    rate: f64,
    min_rtt: Duration,
}

impl LinkFit {
    /// For the TCP socket `fd`, whose round trip (EHLO's) was `rtt`; `None` for a short
    /// path.
    pub fn new(fd: RawFd, rtt: Duration) -> Option<LinkFit> {
        (rtt >= MIN_RTT).then_some(LinkFit {
            fd,
            rate: 0.0,
            min_rtt: rtt,
        })
    }

    /// Whether `len` more bytes may be written now: they fit under the target, or
    /// nothing is waiting for an acknowledgement (a message larger than the target
    /// still goes, alone).
    pub fn admits(&mut self, len: usize) -> bool {
        let Some(queued) = outq(self.fd) else {
            return true;
        };
        if queued == 0 {
            return true;
        }
        queued + len <= self.target()
    }

    /// The unacknowledged bytes allowed now.
    pub fn target(&mut self) -> usize {
        if let Some(info) = tcp_info(self.fd) {
            if info.tcpi_min_rtt > 0 {
                let min_rtt = Duration::from_micros(u64::from(info.tcpi_min_rtt));
                self.min_rtt = self.min_rtt.min(min_rtt);
            }
            self.rate = self.rate.max(info.tcpi_delivery_rate as f64);
        }
        ((GAIN * self.rate * self.min_rtt.as_secs_f64()) as usize).max(FLOOR)
    }

    /// How long to wait before asking again: a small part of a round trip.
    pub fn poll(&self) -> Duration {
        (self.min_rtt / 16).clamp(Duration::from_millis(2), Duration::from_millis(50))
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
    }
}
