//! The server's connection stream: plain TCP, or TLS after STARTTLS or on an smtps
//! listener. `upgrade` runs the server handshake in place. The same type as the
//! delivery client's, because an ODMR turn (RFC 2645) hands a connection from one side
//! to the other: the hub delivers over the station's connection, and the station serves
//! SMTP on the connection it made.

use std::io;

use tokio_rustls::TlsAcceptor;

use crate::net::{EitherTls, MaybeTls};

pub type Stream = MaybeTls<EitherTls>;

impl Stream {
    /// The TLS handshake over the plain stream.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        let tcp = self
            .take_plain()
            .ok_or_else(|| io::Error::other("TLS is already active"))?;
        let tls = acceptor.accept(tcp).await?;
        *self = MaybeTls::Tls(Box::new(EitherTls::Server(tls)));
        Ok(())
    }
}
