//! TLS between hosts, when asked (`nextmini serve --tls`, `nextmini controller --tls`): the
//! server makes itself a certificate once (its host's addresses and name as subject
//! alternative names, in `<state-dir>/tls/`, the key readable by its owner only) and keeps
//! it; clients trust exactly that certificate (`NEXTMINI_CA=<state-dir>/tls/cert.pem`, copied
//! to them as the token is), nothing else.
//!
//! rustls with the ring provider; the certificate is rcgen's.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub use tokio_rustls::TlsAcceptor;

/// The server side of a TLS connection.
pub type ServerStream<Io> = tokio_rustls::server::TlsStream<Io>;

/// Where clients find the certificate to trust.
pub const CA_ENV: &str = "NEXTMINI_CA";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(
        "{what} is reached over TLS: set {CA_ENV} to its certificate (tls/cert.pem in its state directory)"
    )]
    NoCa { what: String },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's certificate and key, as made (or found) in its state directory.
pub struct Identity {
    /// What clients trust (`NEXTMINI_CA`).
    pub cert_path: PathBuf,
    config: Arc<rustls::ServerConfig>,
}

impl Identity {
    /// The certificate in `<state_dir>/tls/`, made now if there is none.
    pub fn in_state_dir(state_dir: &Path) -> Result<Identity, TlsError> {
        let dir = state_dir.join("tls");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        if !cert_path.exists() || !key_path.exists() {
            make(&dir, &cert_path, &key_path)?;
        }
        let certs = read_certs(&cert_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(Identity {
            cert_path,
            config: Arc::new(config),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// This host's names: every IPv4 and IPv6 address it has now, its hostname, `localhost`.
fn subject_names() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let Some(a) = ifa.address else { continue };
            let ip = if let Some(v4) = a.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = a.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            names.push(ip.to_string());
        }
    }
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
    {
        names.push(host.to_owned());
    }
    names.push("localhost".to_owned());
    names.sort();
    names.dedup();
    names
}

fn make(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::File { path, source }
    };
    std::fs::create_dir_all(dir).map_err(file_err(dir))?;
    let names = subject_names();
    let made = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key_path)
        .and_then(|mut f| f.write_all(made.signing_key.serialize_pem().as_bytes()))
        .map_err(file_err(key_path))?;
    std::fs::write(cert_path, made.cert.pem()).map_err(file_err(cert_path))?;
    tracing::info!(
        "made a TLS certificate for {} in {}",
        names.join(", "),
        cert_path.display()
    );
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// What a client trusts: the certificates of one file (a server's `tls/cert.pem`).
#[derive(Clone)]
pub struct Trust {
    certs: Arc<Vec<CertificateDer<'static>>>,
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trust({} certificates)", self.certs.len())
    }
}

impl Trust {
    pub fn file(path: &Path) -> Result<Trust, TlsError> {
        let certs = read_certs(path)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in &certs {
            roots.add(c.clone())?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Trust {
            certs: Arc::new(certs),
            config: Arc::new(config),
        })
    }

    /// The file `NEXTMINI_CA` names, if set.
    pub fn from_env() -> Result<Option<Trust>, TlsError> {
        match std::env::var_os(CA_ENV) {
            Some(p) if !p.is_empty() => Trust::file(Path::new(&p)).map(Some),
            _ => Ok(None),
        }
    }

    /// The file `NEXTMINI_CA` names, which must be set: `what` is reached over TLS.
    pub fn required(what: &str) -> Result<Trust, TlsError> {
        Trust::from_env()?.ok_or_else(|| TlsError::NoCa {
            what: what.to_owned(),
        })
    }

    /// The trusted certificates (DER), for clients that take them as such.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// TLS over `stream` to the server named `host` (an address or a name in its certificate).
    pub async fn connect(&self, host: &str, stream: TcpStream) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A client connection, plain or over TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// `stream` as it is, or over TLS when `trust` is given.
    pub async fn open(trust: Option<&Trust>, host: &str, stream: TcpStream) -> io::Result<Stream> {
        match trust {
            Some(t) => t.connect(host, stream).await,
            None => Ok(Stream::Plain(stream)),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_trusting_the_servers_file_talks_to_it_and_one_trusting_another_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let base = std::env::temp_dir().join(format!("nextmini-tls-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        let server = Identity::in_state_dir(&a).unwrap();
        let other = Identity::in_state_dir(&b).unwrap();
        // Made once, then kept: a second start serves the same certificate.
        let again = Identity::in_state_dir(&a).unwrap();
        assert_eq!(
            read_certs(&server.cert_path).unwrap(),
            read_certs(&again.cert_path).unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = server.acceptor();
        let served = tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 5];
                    tls.read_exact(&mut buf).await.unwrap();
                    tls.write_all(&buf).await.unwrap();
                    tls.shutdown().await.unwrap();
                }
            }
        });
        let good = Trust::file(&server.cert_path).unwrap();
        let mut s = good
            .connect("127.0.0.1", TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut echo = Vec::new();
        s.read_to_end(&mut echo).await.unwrap();
        assert_eq!(echo, b"hello");
        let wrong = Trust::file(&other.cert_path).unwrap();
        let refused = wrong
            .connect("127.0.0.1", TcpStream::connect(addr).await.unwrap())
            .await;
        assert!(refused.is_err());
        served.await.unwrap();
        let _ = std::fs::remove_dir_all(&base);
    }
}
