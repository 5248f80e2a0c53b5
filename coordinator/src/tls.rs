//! TLS for the control API and the agents' websocket: the operator's certificate, or a CA and
//! server certificate the coordinator makes on first start (`STATE_DIR/tls`). Clients pin the
//! fingerprint it prints (of the CA, so the server certificate can be reissued under it).

use dyno_shared::tls::Pin;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no certificate")]
    NoCert(PathBuf),
    #[error("cannot make the coordinator's certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

pub struct ApiTls {
    pub server: Arc<rustls::ServerConfig>,
    /// What clients pin: the CA of a self-made certificate, else the operator's leaf.
    pub pin: Pin,
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let err = |e: rustls::pki_types::pem::Error| TlsSetupError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if chain.is_empty() {
        return Err(TlsSetupError::NoCert(path.to_path_buf()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsSetupError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // Websockets and the CLI speak HTTP/1.1.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The operator's certificate chain and key (PEM); clients pin the leaf.
pub fn from_files(cert: &Path, key: &Path) -> Result<ApiTls, TlsSetupError> {
    let chain = read_chain(cert)?;
    let pin = Pin::of(&chain[0]);
    Ok(ApiTls {
        server: server_config(chain, read_key(key)?)?,
        pin,
    })
}

/// The certificate in `dir` (made on first use): a CA and a server certificate it signed for
/// `names` (DNS names or IP addresses).
pub fn self_made(dir: &Path, names: &[String]) -> Result<ApiTls, TlsSetupError> {
    let (chain_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    if !chain_path.exists() || !key_path.exists() {
        generate(dir, names)?;
    }
    let chain = read_chain(&chain_path)?;
    // The chain is server then CA; the CA is what clients pin.
    let pin = Pin::of(chain.last().expect("read_chain returns at least one"));
    Ok(ApiTls {
        server: server_config(chain, read_key(&key_path)?)?,
        pin,
    })
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), TlsSetupError> {
    let err = |source| TlsSetupError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn generate(dir: &Path, names: &[String]) -> Result<(), TlsSetupError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir).map_err(|source| TlsSetupError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dyno coordinator CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "dyno coordinator");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    write_file(&dir.join("ca.key"), &ca_key_pem, 0o600)?;
    write_file(&dir.join("ca.pem"), &ca.pem(), 0o644)?;
    write_file(&dir.join("server.key"), &key.serialize_pem(), 0o600)?;
    // Written last: its presence says the set is complete.
    write_file(
        &dir.join("server.pem"),
        &format!("{}{}", cert.pem(), ca.pem()),
        0o644,
    )?;
    Ok(())
}

/// Accepts TCP connections and completes their TLS handshakes off the accept loop, so one slow
/// client never holds up the others; `axum::serve` takes the finished streams.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

/// Handshakes in flight at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl TlsListener {
    pub fn spawn(
        tcp: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, conn_tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = conn_tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor is gone only when the runtime shuts down.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_made_certificate_is_made_once_and_pinned_by_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = self_made(dir.path(), &names).unwrap();
        let again = self_made(dir.path(), &names).unwrap();
        assert_eq!(first.pin, again.pin, "a restart keeps the certificate");
        let ca = read_chain(&dir.path().join("ca.pem")).unwrap();
        assert_eq!(first.pin, Pin::of(&ca[0]));
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "server.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let bad = from_files(&dir.path().join("nope.pem"), &dir.path().join("server.key"));
        assert!(bad.err().unwrap().to_string().contains("nope.pem"));
    }
}
