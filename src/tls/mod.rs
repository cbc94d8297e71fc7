//! TLS for the HTTP server and client, sans-IO: rustls between the TCP byte stream and
//! the same HTTP code that speaks plain text. TLS bytes in, plaintext out; plaintext in,
//! TLS bytes out. Nothing here touches a socket or a clock.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

pub mod seeded;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::time_provider::{DefaultTimeProvider, TimeProvider};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use smoltcp::time::{Duration, Instant};

/// ALPN: HTTP/1.1 only (RFC 7301).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Plaintext rustls may hold before it is encrypted and sent: with smoltcp's send buffer
/// this bounds what one connection keeps in memory.
const PLAINTEXT_LIMIT: usize = 64 * 1024;

/// Why TLS could not be set up, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {reason}; give a PEM certificate with --cert")]
    Cert { path: String, reason: String },
    #[error("cannot read key file {path}: {reason}; give a PEM private key with --key")]
    Key { path: String, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert} ({reason})")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error(
        "cannot read --cacert {path}: {reason}; give the server's certificate (or its CA's) as PEM"
    )]
    Roots { path: String, reason: String },
}

/// A certificate chain and its key, ready for rustls, and the PEM clients can trust.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The end-entity certificate as PEM (for `--cert-out` and `curl --cacert`).
    pub cert_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// How long a generated certificate is valid: 90 days, the lifetime public CAs give
/// (Let's Encrypt), so a certificate left lying around stops being trusted by itself.
pub const CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// How far before its making a generated certificate is valid from: an hour, for a client
/// whose clock runs a little behind ours.
pub const CERT_BACKDATE: Duration = Duration::from_secs(3600);

/// When a certificate is valid (RFC 5280 §4.1.2.5), as the stack's clock counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Instant,
    pub not_after: Instant,
}

impl Validity {
    /// From an hour before `now` to [`CERT_LIFETIME`] after it.
    pub fn around(now: Instant) -> Self {
        Validity {
            not_before: now - CERT_BACKDATE,
            not_after: now + CERT_LIFETIME,
        }
    }

    /// From `start` exactly, for [`CERT_LIFETIME`]: the same bytes on every run.
    pub fn from(start: Instant) -> Self {
        Validity {
            not_before: start,
            not_after: start + CERT_LIFETIME,
        }
    }
}

/// A self-signed certificate for `names` and `ip` (every one a subject alternative name,
/// RFC 5280 §4.2.1.6), with a fresh P-256 key, valid from an hour ago for 90 days.
pub fn generate(names: &[String], ip: Ipv4Addr) -> Result<Identity, TlsError> {
    generate_valid(names, ip, Validity::around(crate::clock::now()))
}

/// As [`generate`], valid when `validity` says.
pub fn generate_valid(
    names: &[String],
    ip: Ipv4Addr,
    validity: Validity,
) -> Result<Identity, TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    self_signed(names, ip, &key, der, validity)
}

/// The certificate for `names` and `ip`, signed by its own `key` (`der` is the same key
/// for rustls).
fn self_signed(
    names: &[String],
    ip: Ipv4Addr,
    key: &rcgen::KeyPair,
    der: PrivateKeyDer<'static>,
    validity: Validity,
) -> Result<Identity, TlsError> {
    let err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut sans: Vec<String> = names.to_vec();
    sans.push(ip.to_string());
    let mut params = rcgen::CertificateParams::new(sans).map_err(err)?;
    // rcgen's default is 1975 to 4096: a certificate that never expires.
    let unix_epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs = |t: Instant| std::time::Duration::from_secs(t.secs().max(0) as u64);
    params.not_before = unix_epoch + secs(validity.not_before);
    params.not_after = unix_epoch + secs(validity.not_after);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| ip.to_string()),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "synack (self-signed)");
    let cert = params.self_signed(key).map_err(err)?;
    Ok(Identity {
        chain: vec![cert.der().clone()],
        key: der,
        cert_pem: cert.pem(),
    })
}

/// Reads a PEM certificate chain and private key. Every way that can fail (missing file,
/// not PEM, no certificate or key inside, a key of another certificate) is one clear error.
pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let key_err = |reason: String| TlsError::Key {
        path: key.display().to_string(),
        reason,
    };
    let cert_pem = std::fs::read_to_string(cert).map_err(|e| cert_err(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not PEM ({e})")))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block in it".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| key_err(e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| key_err(format!("no private key in it ({e})")))?;
    let identity = Identity {
        chain,
        key: key_der,
        cert_pem,
    };
    // rustls checks that the key's public half is the certificate's.
    server_config(&identity, None).map_err(|e| TlsError::Mismatch {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(identity)
}

/// Collects TLS secrets in the key log format (NSS `SSLKEYLOGFILE`), for the capture's
/// Decryption Secrets Block and `--keylog`.
#[derive(Debug, Default)]
pub struct KeyLogLines {
    lines: Mutex<Vec<String>>,
}

impl KeyLogLines {
    /// The lines logged since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl rustls::KeyLog for KeyLogLines {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line =
            String::with_capacity(label.len() + 2 + 2 * (client_random.len() + secret.len()));
        line.push_str(label);
        line.push(' ');
        for b in client_random {
            let _ = write!(line, "{b:02x}");
        }
        line.push(' ');
        for b in secret {
            let _ = write!(line, "{b:02x}");
        }
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

/// rustls's clock (certificate validity, ticket ages) for a run on virtual time, such as
/// `synack demo`'s: the driver moves it as it moves its own clock, so certificates are
/// checked against the simulated date, not today's. (The demo's seeded certificate is
/// valid from [`crate::clock::VIRTUAL_EPOCH`] for 90 days.) Real runs leave rustls on the
/// wall clock. An atomic, because rustls wants a time source it may share between threads.
#[derive(Debug, Clone)]
pub struct VirtualTime(Arc<AtomicI64>);

impl VirtualTime {
    pub fn new(start: Instant) -> Self {
        VirtualTime(Arc::new(AtomicI64::new(start.total_micros())))
    }

    /// Moves it forward to `now`, never back.
    pub fn advance_to(&self, now: Instant) {
        self.0.fetch_max(now.total_micros(), Ordering::Relaxed);
    }

    pub fn now(&self) -> Instant {
        Instant::from_micros(self.0.load(Ordering::Relaxed))
    }
}

impl TimeProvider for VirtualTime {
    fn current_time(&self) -> Option<UnixTime> {
        let micros = u64::try_from(self.now().total_micros()).ok()?;
        Some(UnixTime::since_unix_epoch(
            std::time::Duration::from_micros(micros),
        ))
    }
}

/// The server's TLS configuration: TLS 1.3 and 1.2 with ring's cipher suites, ALPN
/// `http/1.1`, and the key log if asked for.
pub fn server_config(
    id: &Identity,
    keylog: Option<Arc<KeyLogLines>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config_with(
        id,
        keylog,
        Arc::new(rustls::crypto::ring::default_provider()),
    )
}

/// As [`server_config`], with a given crypto provider (a seeded one for `demo`).
pub fn server_config_with(
    id: &Identity,
    keylog: Option<Arc<KeyLogLines>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config_with_time(id, keylog, provider, Arc::new(DefaultTimeProvider))
}

/// As [`server_config_with`], with rustls reading the time from `time` (a
/// [`VirtualTime`] for `demo`).
pub fn server_config_with_time(
    id: &Identity,
    keylog: Option<Arc<KeyLogLines>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    time: Arc<dyn TimeProvider>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_details(provider, time)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    if let Some(keylog) = keylog {
        config.key_log = keylog;
    }
    Ok(Arc::new(config))
}

/// Reads the certificates a client trusts (`--cacert`): one or more PEM certificates.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Roots {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not PEM ({e})")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

/// Whom a client trusts.
pub enum Trust {
    /// These certificates as roots (`--cacert`): there are no public roots here.
    Roots(Vec<CertificateDer<'static>>),
    /// Any certificate at all (`--insecure`): the handshake's signatures are still
    /// checked, but nothing says the key belongs to the name.
    Anyone,
}

/// The client's TLS configuration: TLS 1.3 and 1.2, ALPN `http/1.1`, the key log if asked.
/// Certificates are checked against the wall clock.
pub fn client_config(
    trust: Trust,
    keylog: Option<Arc<KeyLogLines>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with_time(trust, keylog, provider, Arc::new(DefaultTimeProvider))
}

/// As [`client_config`], with certificates checked against the time `time` gives (a
/// [`VirtualTime`] for `demo`).
pub fn client_config_with_time(
    trust: Trust,
    keylog: Option<Arc<KeyLogLines>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    time: Arc<dyn TimeProvider>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let err = |e: rustls::Error| TlsError::Generate(e.to_string());
    let builder = ClientConfig::builder_with_details(Arc::clone(&provider), time)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(err)?;
    let mut config = match trust {
        Trust::Roots(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots.add(cert).map_err(err)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Anyone => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    if let Some(keylog) = keylog {
        config.key_log = keylog;
    }
    Ok(Arc::new(config))
}

/// `--insecure`: takes any certificate for any name, but still checks that the server
/// holds the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
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
        cert: &CertificateDer<'_>,
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

/// What the handshake settled on, for the journey's decrypt stage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Negotiated {
    pub version: String,
    pub cipher: String,
    pub sni: Option<String>,
    pub alpn: Option<String>,
}

/// One connection's TLS: records in, plaintext out, and back.
pub struct TlsSession {
    conn: Connection,
    /// The name the client asked for (SNI), on the client's side.
    server_name: Option<String>,
    /// The peer sent close_notify: no more plaintext will come.
    peer_closed: bool,
    /// We sent close_notify: rustls reads nothing more. It would answer a bad record
    /// with a fatal alert after our close_notify, which it asserts against.
    closed: bool,
}

/// A connection's TLS ended before its time. The connection should send what alert is
/// pending, then close.
#[derive(Debug, thiserror::Error)]
pub enum TlsFailed {
    /// The peer said close_notify before the handshake was done: it went away in good
    /// order (RFC 8446 §6.1, a closure alert, not an error alert). rustls reports it as
    /// an error only because the handshake can now never finish.
    #[error("TLS: the peer closed (close_notify) before the handshake was done")]
    ClosedEarly,
    /// The peer sent an error alert (RFC 8446 §6.2): it found fault with us.
    #[error("TLS: the peer sent a fatal alert: {0}")]
    Alert(String),
    /// Anything else: records that do not decrypt or parse, a certificate not trusted, a
    /// handshake that cannot go on.
    #[error("TLS: {0}")]
    Failed(String),
}

impl TlsFailed {
    /// An orderly close rather than a failure: worth no more than a debug line.
    pub fn is_orderly_close(&self) -> bool {
        matches!(self, TlsFailed::ClosedEarly)
    }
}

impl From<rustls::Error> for TlsFailed {
    fn from(e: rustls::Error) -> Self {
        match e {
            rustls::Error::AlertReceived(rustls::AlertDescription::CloseNotify) => {
                TlsFailed::ClosedEarly
            }
            rustls::Error::AlertReceived(alert) => TlsFailed::Alert(format!("{alert:?}")),
            other => TlsFailed::Failed(other.to_string()),
        }
    }
}

impl TlsSession {
    /// The server's side of a connection.
    pub fn server(config: Arc<ServerConfig>) -> Result<Self, TlsFailed> {
        let conn = ServerConnection::new(config)?;
        Ok(Self::with(Connection::Server(conn), None))
    }

    /// The client's side, for `name` (sent as SNI and checked against the certificate).
    pub fn client(config: Arc<ClientConfig>, name: &str) -> Result<Self, TlsFailed> {
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
            .map_err(|e| TlsFailed::Failed(format!("{name:?} cannot be a TLS server name: {e}")))?;
        let conn = ClientConnection::new(config, server_name)?;
        Ok(Self::with(Connection::Client(conn), Some(name.to_owned())))
    }

    fn with(mut conn: Connection, server_name: Option<String>) -> Self {
        conn.set_buffer_limit(Some(PLAINTEXT_LIMIT));
        TlsSession {
            conn,
            server_name,
            peer_closed: false,
            closed: false,
        }
    }

    /// Takes TLS records from the network; returns how many bytes it took. Decrypted
    /// plaintext is then ready for [`read_plaintext`](Self::read_plaintext).
    pub fn receive(&mut self, mut data: &[u8]) -> Result<usize, TlsFailed> {
        let before = data.len();
        if self.closed {
            // RFC 8446 §6.1: after our close_notify we only wait for the peer's, and
            // nothing the peer sends matters any more: dropped.
            return Ok(before);
        }
        while !data.is_empty() && self.conn.wants_read() {
            match self.conn.read_tls(&mut data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsFailed::Failed(e.to_string())),
            }
            let state = self.conn.process_new_packets()?;
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
        }
        Ok(before - data.len())
    }

    /// Copies decrypted bytes into `out`; returns how many.
    pub fn read_plaintext(&mut self, out: &mut [u8]) -> usize {
        // WouldBlock: nothing decrypted yet; UnexpectedEof: the peer closed without
        // close_notify, which is the TCP layer's business. Either way, nothing to read.
        self.conn.reader().read(out).unwrap_or_default()
    }

    /// Hands plaintext to be encrypted; returns how many bytes rustls took (fewer than
    /// offered once its buffer is full: send what it has first).
    pub fn send_plaintext(&mut self, data: &[u8]) -> usize {
        self.conn.writer().write(data).unwrap_or(0)
    }

    /// Copies TLS records to send into `out`; returns how many bytes.
    pub fn transmit(&mut self, mut out: &mut [u8]) -> usize {
        let room = out.len();
        while self.conn.wants_write() && !out.is_empty() {
            match self.conn.write_tls(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        room - out.len()
    }

    pub fn wants_transmit(&self) -> bool {
        self.conn.wants_write()
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer said close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Queues our close_notify (RFC 8446 §6.1).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
        self.closed = true;
    }

    /// What the handshake negotiated, once it is done.
    pub fn negotiated(&self) -> Option<Negotiated> {
        if self.conn.is_handshaking() {
            return None;
        }
        Some(Negotiated {
            version: self
                .conn
                .protocol_version()
                .map_or_else(String::new, |v| format!("{v:?}")),
            cipher: self
                .conn
                .negotiated_cipher_suite()
                .map_or_else(String::new, |s| format!("{:?}", s.suite())),
            sni: match &self.conn {
                Connection::Server(c) => c.server_name().map(str::to_owned),
                Connection::Client(_) => self.server_name.clone(),
            },
            alpn: self
                .conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    fn client(
        id: &Identity,
        versions: &[&'static rustls::SupportedProtocolVersion],
        name: &str,
    ) -> ClientConnection {
        let mut roots = RootCertStore::empty();
        roots.add(id.chain[0].clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        ClientConnection::new(
            Arc::new(config),
            ServerName::try_from(name.to_owned()).unwrap(),
        )
        .unwrap()
    }

    /// Moves records both ways until neither side has anything to send.
    fn pump(c: &mut ClientConnection, s: &mut TlsSession) {
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..20 {
            let mut moved = false;
            while c.wants_write() {
                let mut out = Vec::new();
                c.write_tls(&mut out).unwrap();
                assert_eq!(s.receive(&out).unwrap(), out.len());
                moved = true;
            }
            let n = s.transmit(&mut buf);
            if n > 0 {
                let mut slice = &buf[..n];
                while !slice.is_empty() {
                    c.read_tls(&mut slice).unwrap();
                    c.process_new_packets().unwrap();
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn handshake(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (ClientConnection, TlsSession, Arc<KeyLogLines>) {
        let id = generate(&["synack.test".into()], Ipv4Addr::new(10, 77, 0, 2)).unwrap();
        let keylog = Arc::new(KeyLogLines::default());
        let mut s = TlsSession::server(server_config(&id, Some(keylog.clone())).unwrap()).unwrap();
        let mut c = client(&id, versions, "synack.test");
        pump(&mut c, &mut s);
        assert!(!c.is_handshaking() && !s.is_handshaking());
        (c, s, keylog)
    }

    #[test]
    fn tls13_round_trip_with_alpn_sni_and_key_log() {
        let (mut c, mut s, keylog) = handshake(&[&rustls::version::TLS13]);
        let n = s.negotiated().unwrap();
        assert_eq!(
            (n.version.as_str(), n.sni.as_deref(), n.alpn.as_deref()),
            ("TLSv1_3", Some("synack.test"), Some("http/1.1"))
        );
        c.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        pump(&mut c, &mut s);
        let mut got = [0u8; 64];
        let n = s.read_plaintext(&mut got);
        assert_eq!(&got[..n], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(s.send_plaintext(b"HTTP/1.1 200 OK\r\n\r\n"), 19);
        pump(&mut c, &mut s);
        let mut back = [0u8; 64];
        let n = c.reader().read(&mut back).unwrap();
        assert_eq!(&back[..n], b"HTTP/1.1 200 OK\r\n\r\n");
        let lines = keylog.take();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("CLIENT_HANDSHAKE_TRAFFIC_SECRET ")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("SERVER_TRAFFIC_SECRET_0 "))
        );
        // close_notify both ways.
        c.send_close_notify();
        pump(&mut c, &mut s);
        assert!(s.peer_closed());
    }

    /// A handshake between our client and our server, the client checking the server's
    /// certificate (trusted as a root) as if it were `at`; the client's error, if any.
    fn verify_at(id: &Identity, at: Instant) -> Result<(), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = client_config_with_time(
            Trust::Roots(id.chain.clone()),
            None,
            provider,
            Arc::new(VirtualTime::new(at)),
        )
        .unwrap();
        let mut c = TlsSession::client(config, "synack.test").unwrap();
        let mut s = TlsSession::server(server_config(id, None).unwrap()).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..20 {
            let n = c.transmit(&mut buf);
            if n > 0 {
                // The server's own failure (the client's alert) is not what we ask about.
                let _ = s.receive(&buf[..n]);
            }
            let m = s.transmit(&mut buf);
            if m > 0 {
                c.receive(&buf[..m]).map_err(|e| e.to_string())?;
            }
            if n == 0 && m == 0 {
                break;
            }
        }
        assert!(
            !c.is_handshaking(),
            "the handshake neither failed nor finished"
        );
        Ok(())
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn virtual_time_only_moves_forward_and_is_what_rustls_reads() {
        let t = VirtualTime::new(crate::clock::VIRTUAL_EPOCH);
        let shared = t.clone();
        shared.advance_to(crate::clock::VIRTUAL_EPOCH + DAY);
        t.advance_to(crate::clock::VIRTUAL_EPOCH);
        assert_eq!(t.now(), crate::clock::VIRTUAL_EPOCH + DAY);
        let unix = t.current_time().unwrap().as_secs();
        assert_eq!(unix, 1_767_225_600 + 86_400);
    }

    #[test]
    fn generated_certificates_are_valid_from_an_hour_ago_for_90_days() {
        let made = crate::clock::VIRTUAL_EPOCH + DAY * 100;
        let id = generate_valid(
            &["synack.test".into()],
            Ipv4Addr::new(10, 77, 0, 2),
            Validity::around(made),
        )
        .unwrap();
        let minute = Duration::from_secs(60);
        for (at, ok) in [
            (made - Duration::from_secs(7200), false),
            (made - CERT_BACKDATE + minute, true),
            (made, true),
            (made + DAY * 89, true),
            (made + DAY * 90 - minute, true),
            (made + DAY * 90 + minute, false),
        ] {
            let got = verify_at(&id, at);
            assert_eq!(got.is_ok(), ok, "at {at}: {got:?}");
        }
        let early = verify_at(&id, made - Duration::from_secs(7200)).unwrap_err();
        assert!(early.contains("not valid yet"), "{early}");
        let late = verify_at(&id, made + DAY * 91).unwrap_err();
        assert!(late.contains("expired"), "{late}");
        // `generate` makes one valid now, and not in 91 days.
        let now = crate::clock::now();
        let id = generate(&["synack.test".into()], Ipv4Addr::new(10, 77, 0, 2)).unwrap();
        assert_eq!(verify_at(&id, now), Ok(()));
        assert!(verify_at(&id, now + DAY * 91).is_err());
    }

    #[test]
    fn the_seeded_certificate_is_valid_from_the_virtual_epoch_for_90_days() {
        let epoch = crate::clock::VIRTUAL_EPOCH;
        let id = seeded::identity(1, &["synack.test".into()], Ipv4Addr::new(10, 77, 0, 2)).unwrap();
        assert_eq!(
            verify_at(&id, epoch),
            Ok(()),
            "the demo's clock starts here"
        );
        assert_eq!(verify_at(&id, epoch + DAY * 90), Ok(()));
        assert!(verify_at(&id, epoch - Duration::from_secs(1)).is_err());
        assert!(verify_at(&id, epoch + DAY * 90 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn tls12_works_too() {
        let (_c, s, keylog) = handshake(&[&rustls::version::TLS12]);
        assert_eq!(s.negotiated().unwrap().version, "TLSv1_2");
        assert!(
            keylog
                .take()
                .iter()
                .any(|l| l.starts_with("CLIENT_RANDOM "))
        );
    }

    #[test]
    fn plaintext_or_garbage_is_an_error_not_a_panic() {
        let id = generate(&["synack.test".into()], Ipv4Addr::new(10, 77, 0, 2)).unwrap();
        let config = server_config(&id, None).unwrap();
        let mut s = TlsSession::server(config.clone()).unwrap();
        assert!(s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
        let mut buf = [0u8; 256];
        assert!(s.transmit(&mut buf) > 0, "an alert goes back");
        let mut s = TlsSession::server(config).unwrap();
        assert!(s.receive(&[0x42; 100]).is_err(), "not a TLS record at all");
    }

    /// Found by fuzz/pair (fuzz/regressions/pair/): the client said close_notify, then a
    /// duplicated or corrupted record came in; rustls answered it with a fatal alert after
    /// the close_notify (rustls asserts against that in debug builds:
    /// `!self.sent_fatal_alert`).
    #[test]
    fn after_our_close_notify_what_the_peer_sends_is_dropped() {
        let id = generate(&["synack.test".into()], Ipv4Addr::new(10, 77, 0, 2)).unwrap();
        let mut s = TlsSession::server(server_config(&id, None).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = client_config(Trust::Anyone, None, provider).unwrap();
        let mut c = TlsSession::client(config, "synack.test").unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..10 {
            let n = c.transmit(&mut buf);
            s.receive(&buf[..n]).unwrap();
            let n = s.transmit(&mut buf);
            c.receive(&buf[..n]).unwrap();
        }
        c.close();
        assert!(c.transmit(&mut buf) > 0, "our close_notify");
        assert_eq!(c.receive(&[0x42; 64]).unwrap(), 64, "taken and dropped");
        assert_eq!(c.transmit(&mut buf), 0, "no alert after our close_notify");
    }

    #[test]
    fn close_notify_during_the_handshake_is_an_orderly_close_not_a_fatal_alert() {
        for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12]] {
            let id = generate(&["synack.test".into()], Ipv4Addr::new(10, 77, 0, 2)).unwrap();
            let mut s = TlsSession::server(server_config(&id, None).unwrap()).unwrap();
            let mut c = client(&id, versions, "synack.test");
            // The client says hello, then changes its mind (curl, a browser closing a tab).
            let mut hello = Vec::new();
            c.write_tls(&mut hello).unwrap();
            assert_eq!(s.receive(&hello).unwrap(), hello.len());
            let mut buf = vec![0u8; 64 * 1024];
            assert!(s.transmit(&mut buf) > 0, "the server's first flight");
            assert!(s.is_handshaking());
            c.send_close_notify();
            let mut bye = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut bye).unwrap();
            }
            match s.receive(&bye) {
                // TLS 1.2 lets a warning alert pass; the peer's FIN will follow.
                Ok(_) => {}
                Err(e) => {
                    let text = e.to_string();
                    assert!(e.is_orderly_close(), "{versions:?}: {e:?}");
                    assert!(
                        text.contains("close_notify") && !text.contains("fatal"),
                        "{versions:?}: {text}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_real_fatal_alert_is_called_one() {
        let id = generate(&["synack.test".into()], Ipv4Addr::new(10, 77, 0, 2)).unwrap();
        let other = generate(&["other.test".into()], Ipv4Addr::new(10, 77, 0, 3)).unwrap();
        // The client trusts another certificate: it says bad_certificate (or unknown_ca).
        let mut c = client(&other, &[&rustls::version::TLS13], "synack.test");
        let mut s = TlsSession::server(server_config(&id, None).unwrap()).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = None;
        for _ in 0..10 {
            while c.wants_write() {
                let mut out = Vec::new();
                c.write_tls(&mut out).unwrap();
                if let Err(e) = s.receive(&out) {
                    got = Some(e);
                }
            }
            let n = s.transmit(&mut buf);
            let mut slice = &buf[..n];
            while !slice.is_empty() {
                c.read_tls(&mut slice).unwrap();
                let _ = c.process_new_packets();
            }
            if got.is_some() || n == 0 {
                break;
            }
        }
        let e = got.expect("the server hears the client's alert");
        assert!(!e.is_orderly_close());
        assert!(e.to_string().contains("fatal alert"), "{e}");
    }

    #[test]
    fn loading_says_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("synack-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = generate(&["a.test".into()], Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        let b = generate(&["b.test".into()], Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        let pem_key = |id: &Identity| {
            let PrivateKeyDer::Pkcs8(k) = &id.key else {
                panic!()
            };
            let b64 = base64_lines(k.secret_pkcs8_der());
            format!("-----BEGIN PRIVATE KEY-----\n{b64}-----END PRIVATE KEY-----\n")
        };
        std::fs::write(dir.join("a.crt"), &a.cert_pem).unwrap();
        std::fs::write(dir.join("a.key"), pem_key(&a)).unwrap();
        std::fs::write(dir.join("b.key"), pem_key(&b)).unwrap();
        std::fs::write(dir.join("junk"), "not pem").unwrap();
        assert!(load(&dir.join("a.crt"), &dir.join("a.key")).is_ok());
        let e = load(&dir.join("missing.crt"), &dir.join("a.key"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read certificate file") && e.contains("--cert"),
            "{e}"
        );
        let e = load(&dir.join("junk"), &dir.join("a.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        let e = load(&dir.join("a.crt"), &dir.join("junk"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no private key"), "{e}");
        let e = load(&dir.join("a.crt"), &dir.join("b.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not belong to the certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Base64 in 64-column lines, for writing PEM in the test.
    fn base64_lines(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                s.push(if i <= chunk.len() {
                    A[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        s.as_bytes()
            .chunks(64)
            .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
            .collect()
    }
}
