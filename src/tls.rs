//! HTTPS of our own: `tls_cert` / `tls_key` loaded with rustls (TLS 1.2 and
//! 1.3 only), served through a certificate resolver whose certificate is
//! swapped on SIGHUP. A file that does not load keeps the old certificate.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificate chain and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_cert`: the certificate chain, leaf first (certbot's
    /// `fullchain.pem`).
    pub cert: PathBuf,
    /// `tls_key`: its private key (PKCS#8, PKCS#1 or SEC1; certbot's
    /// `privkey.pem`).
    pub key: PathBuf,
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or not PEM of the expected kind.
    #[error("cannot read {what} {path}: {reason}; check the {setting} setting and the file")]
    File {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The setting that names it.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refuses it.
    #[error(
        "the key {key} does not fit the certificate {cert}: {reason}; give the key issued with that certificate"
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::File {
        what: "certificate",
        path: files.cert.clone(),
        setting: "tls_cert",
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
        what: "private key",
        path: files.key.clone(),
        setting: "tls_key",
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

/// The certificate in force, swapped by [`Certificates::reload`].
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
}

impl Certificates {
    /// Loads the files; an error stops the daemon at start.
    pub fn open(files: &TlsFiles) -> Result<Arc<Certificates>, TlsError> {
        let key = load(files)?;
        Ok(Arc::new(Certificates {
            files: files.clone(),
            current: ArcSwap::from_pointee(key),
        }))
    }

    /// Reads the files again and serves the new certificate to new
    /// connections; on an error the old one stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load(&self.files)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// The certificate file (for logs).
    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, HTTP/1.1) that
    /// always serves the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Mismatch {
                cert: self.files.cert.clone(),
                key: self.files.key.clone(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Reloads and logs the outcome (SIGHUP, `POST /api/v1/reload`).
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => tracing::info!(cert = %self.files.cert.display(), "certificate reloaded"),
            Err(e) => {
                tracing::error!(
                    "certificate reload failed, the old certificate stays in force: {e}"
                )
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn bad_files_are_named_and_a_failed_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a.test");
        let b = write_pair(dir.path(), "b.test");
        let certs = Certificates::open(&a).unwrap();
        let first = certs.current.load_full();

        let e = load(&TlsFiles {
            cert: dir.path().join("missing.crt"),
            key: a.key.clone(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("tls_cert"), "{e}");
        let e = load(&TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");

        std::fs::write(&a.cert, "not a certificate").unwrap();
        assert!(certs.reload().is_err());
        assert!(Arc::ptr_eq(&first, &certs.current.load_full()));
        std::fs::copy(&b.cert, &a.cert).unwrap();
        std::fs::copy(&b.key, &a.key).unwrap();
        certs.reload().unwrap();
        assert!(!Arc::ptr_eq(&first, &certs.current.load_full()));
    }
}
