//! TLS settings of the network outputs: which CAs to trust, and an
//! optional client certificate. Certificates are always verified.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// `[tls]` of an output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates that sign the receiver's
    /// certificate. Default: the system's bundle
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM file of a client certificate (chain), for receivers that ask.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the receiver's certificate must carry, when it is not the
    /// endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Checks the settings without reading the files.
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) | (None, Some(_)) => Err("TLS: a client certificate needs both `cert` and `key`".into()),
            _ => Ok(()),
        }
    }
}

const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The PEM files of a [`TlsConfig`], read.
pub(crate) struct TlsFiles {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) server_name: Option<String>,
}

impl TlsFiles {
    /// Reads the files; a missing or unreadable one is an error naming it.
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("TLS: cannot read {}: {e}", p.display()));
        let ca = match &config.ca {
            Some(p) => read(p)?,
            None => read(&PathBuf::from(SYSTEM_CAS)).map_err(|e| format!("{e} (set tls.ca)"))?,
        };
        let identity = match (&config.cert, &config.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => return Err("TLS: a client certificate needs both `cert` and `key`".into()),
        };
        Ok(Self { ca, identity, server_name: config.server_name.clone() })
    }

    /// For tonic's channel.
    pub(crate) fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let mut tls =
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        tls
    }

    /// For a plain rustls connection (HTTP, syslog).
    pub(crate) fn rustls(&self) -> Result<ClientConfig, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca) {
            let cert = cert.map_err(|e| format!("TLS: CA file: {e}"))?;
            roots.add(cert).map_err(|e| format!("TLS: CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("TLS: the CA file holds no certificate".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("TLS: client certificate: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("TLS: client key: {e}"))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| format!("TLS: client certificate: {e}"))
            }
        }
    }
}
