//! Links as QUIC connections over the underlay (`protocol = "quic"`, quinn). As with TCP, the
//! node that is told to dial opens the connection (from a socket of its own, on an ephemeral
//! port of its underlay address) and a bidirectional stream on it, and sends its node id; then
//! frames travel on that stream as over TCP (length and frame). A stream rather than QUIC
//! datagrams: a datagram must fit one underlay packet, which a 1,500-byte packet with its
//! frame header and QUIC's own does not.
//!
//! The congestion controller is the run's (`quic_congestion_control`: CUBIC or BBR). Each
//! agent makes a certificate for its links when it starts; the dialling side checks the
//! handshake's signatures but takes any certificate. The encryption QUIC requires is there,
//! the authentication is not: links carry the emulated network's own traffic between the
//! agents of one run, and the control plane has its own TLS (`--tls`).

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tcp::frame_streams;
use super::{Acceptor, Endpoint, LinkEvent, LinkEvents, Transport};
use crate::AbortOnDrop;
use crate::sockets::SocketFactory;

/// The name the certificate carries and the dialler asks for.
const SERVER_NAME: &str = "nextmini-link";
/// Flow-control windows: a link may carry tens of Gbit/s over a sub-millisecond underlay, or
/// less over a real network with more delay; 16 MiB covers 1 Gbit/s at 130 ms.
const STREAM_WINDOW: u32 = 16 << 20;
/// Socket buffers of each endpoint (the kernel caps them at its maximum).
const SOCKET_BUFFER: usize = 4 << 20;
/// A silent peer is gone after this long; keep-alives keep an idle link open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const KEEP_ALIVE: Duration = Duration::from_secs(5);

pub struct QuicTransport {
    factory: SocketFactory,
    port: u16,
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
}

impl QuicTransport {
    /// Nodes take links on `port` of their underlay address; every connection uses
    /// `congestion`.
    pub fn new(
        factory: SocketFactory,
        port: u16,
        congestion: proto::QuicCongestion,
    ) -> io::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| io::Error::other(format!("cannot make the links' certificate: {e}")))?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .map_err(io::Error::other)?;
        let client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyLinkCertificate(provider)))
            .with_no_client_auth();
        let transport = Arc::new(transport_config(congestion));
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server_tls).map_err(io::Error::other)?,
        ));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client_tls).map_err(io::Error::other)?,
        ));
        client.transport_config(transport);
        Ok(QuicTransport {
            factory,
            port,
            server,
            client,
        })
    }
}

fn transport_config(congestion: proto::QuicCongestion) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(STREAM_WINDOW.into())
        .receive_window(STREAM_WINDOW.into())
        .send_window(u64::from(STREAM_WINDOW))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("30 s is a valid idle timeout"),
        ));
    match congestion {
        proto::QuicCongestion::Cubic => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
        proto::QuicCongestion::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
        }
    };
    t
}

struct QuicAcceptor(quinn::Endpoint);

impl Transport for QuicTransport {
    fn listen(&self, node: &Endpoint) -> BoxFuture<'static, io::Result<Box<dyn Acceptor>>> {
        let factory = self.factory.clone();
        let addr = SocketAddrV4::new(node.underlay_addr, self.port);
        let netns = node.netns.clone();
        let server = self.server.clone();
        Box::pin(async move {
            let socket = factory
                .udp(netns, addr, SOCKET_BUFFER, false)
                .await
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot take QUIC links on {addr}: {e}"))
                })?;
            let endpoint = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server),
                socket,
                Arc::new(quinn::TokioRuntime),
            )?;
            Ok(Box::new(QuicAcceptor(endpoint)) as Box<dyn Acceptor>)
        })
    }

    fn connect(&self, node: &Endpoint, peer: u32, addr: Option<SocketAddrV4>, events: LinkEvents) {
        let me = node.node_id;
        let Some(addr) = addr else {
            tracing::warn!("node {me}: a QUIC link to {peer} needs its address");
            return;
        };
        let factory = self.factory.clone();
        let netns = node.netns.clone();
        let local = SocketAddrV4::new(node.underlay_addr, 0);
        let client = self.client.clone();
        tokio::spawn(async move {
            let dialled = async {
                let socket = factory.udp(netns, local, SOCKET_BUFFER, false).await?;
                let mut endpoint = quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    None,
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )?;
                endpoint.set_default_client_config(client);
                let connection = endpoint
                    .connect(SocketAddr::V4(addr), SERVER_NAME)
                    .map_err(io::Error::other)?
                    .await?;
                let (mut send, recv) = connection.open_bi().await?;
                send.write_u32(me).await?;
                io::Result::Ok((connection, send, recv))
            };
            match dialled.await {
                Ok((connection, send, recv)) => {
                    let io = frame_streams(recv, send, peer, events.clone(), connection);
                    let _ = events.send(LinkEvent::Up(peer, io));
                }
                Err(e) => tracing::warn!("node {me}: QUIC link to {peer} at {addr}: {e}"),
            }
        });
    }
}

impl Acceptor for QuicAcceptor {
    fn start(self: Box<Self>, node: u32, events: LinkEvents) -> Option<AbortOnDrop> {
        let endpoint = self.0;
        let task = tokio::spawn(async move {
            // Connections outlive this loop: quinn keeps the endpoint's socket while they last.
            while let Some(incoming) = endpoint.accept().await {
                let events = events.clone();
                tokio::spawn(async move {
                    let accepted = async {
                        let connection = incoming.await?;
                        let (send, mut recv) = connection.accept_bi().await?;
                        let peer = recv.read_u32().await?;
                        io::Result::Ok((connection, send, recv, peer))
                    };
                    match accepted.await {
                        Ok((connection, send, recv, peer)) => {
                            let io = frame_streams(recv, send, peer, events.clone(), connection);
                            let _ = events.send(LinkEvent::Up(peer, io));
                        }
                        Err(e) => tracing::warn!("node {node}: a QUIC link failed to open: {e}"),
                    }
                });
            }
        });
        Some(AbortOnDrop(task.abort_handle()))
    }
}

/// Takes the certificate any agent made for its links (see the module's words on why), and
/// checks that the peer signed the handshake with its key.
#[derive(Debug)]
struct AnyLinkCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyLinkCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
