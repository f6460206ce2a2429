//! A TCP stream that may switch to TLS in place: the server upgrades it after STARTTLS or
//! on an smtps listener, the client after its own STARTTLS or for implicit TLS. `T` is
//! the TLS stream type of either side; `EitherTls` is both, for a connection that turns
//! round (ODMR).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<T>),
    /// Between taking the plain stream for a handshake and getting the TLS one back; a
    /// failed handshake leaves the connection here, to be dropped.
    Gone,
}

impl<T> MaybeTls<T> {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// Takes the plain stream out for a handshake (`None` if TLS is already on).
    pub(crate) fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, MaybeTls::Gone) {
            MaybeTls::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection closed after a failed TLS handshake",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl MaybeTls<EitherTls> {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            MaybeTls::Plain(tcp) => Some(tcp),
            MaybeTls::Tls(tls) => Some(match tls.as_ref() {
                EitherTls::Client(s) => s.get_ref().0,
                EitherTls::Server(s) => s.get_ref().0,
            }),
            MaybeTls::Gone => None,
        }
    }
}

/// A TLS stream of either side: the delivery client's own, or, after an ODMR turn
/// (RFC 2645), the server side of a connection the station made, on which we are now
/// the client.
pub enum EitherTls {
    Client(tokio_rustls::client::TlsStream<TcpStream>),
    Server(tokio_rustls::server::TlsStream<TcpStream>),
}

impl AsyncRead for EitherTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherTls::Client(s) => Pin::new(s).poll_read(cx, buf),
            EitherTls::Server(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EitherTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EitherTls::Client(s) => Pin::new(s).poll_write(cx, buf),
            EitherTls::Server(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherTls::Client(s) => Pin::new(s).poll_flush(cx),
            EitherTls::Server(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherTls::Client(s) => Pin::new(s).poll_shutdown(cx),
            EitherTls::Server(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
