//! The server's connection stream: plain TCP, or TLS after STARTTLS or on an smtps
//! listener. `upgrade` runs the server handshake in place.

use std::io;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::net::MaybeTls;

pub type Stream = MaybeTls<TlsStream<TcpStream>>;

impl Stream {
    /// The TLS handshake over the plain stream.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        let tcp = self
            .take_plain()
            .ok_or_else(|| io::Error::other("TLS is already active"))?;
        let tls = acceptor.accept(tcp).await?;
        *self = MaybeTls::Tls(Box::new(tls));
        Ok(())
    }
}
