//! TLS for the wire server: the rustls acceptor from the configured PEM
//! certificate chain and key, read once at start. A bad certificate or key is
//! an error (never a silent fallback to plain text); with TLS configured,
//! plain-text logins are refused (see [`super::auth`]).

use std::path::Path;
use std::sync::Arc;

use datafusion_postgres::pgwire;
use pgwire::tokio::tokio_rustls::rustls;

use crate::PipelineError;
use crate::config::PgServerConfig;

/// PEM of the server certificate, for SCRAM-SHA-256-PLUS channel binding.
pub(super) type CertPem = Option<Arc<Vec<u8>>>;

/// The TLS acceptor of `cfg` (`None` without TLS) and the certificate PEM
/// for channel binding.
pub(super) fn acceptor(cfg: &PgServerConfig) -> Result<(Option<pgwire::tokio::TlsAcceptor>, CertPem), PipelineError> {
    match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => {
            let acceptor = load_tls(c, k)?;
            Ok((Some(acceptor), std::fs::read(c).ok().map(Arc::new)))
        }
        (None, None) => Ok((None, None)),
        _ => Err(PipelineError::Config("TLS needs both a certificate and a key".into())),
    }
}

fn load_tls(cert: &Path, key: &Path) -> Result<pgwire::tokio::TlsAcceptor, PipelineError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PipelineError::Config(format!("TLS certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(PipelineError::Config(format!("TLS certificate {}: no certificate found", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| PipelineError::Config(format!("TLS key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| PipelineError::Config(format!("TLS {}: {e}", cert.display())))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(cfg)))
}
