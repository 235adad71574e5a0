//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert` read from the `--store` URL, and the rustls
//! connector they make (tokio-postgres-rustls over the workspace's rustls and ring provider).
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` only, and never verifies anything itself: the
//! connector does. So both parameters are taken out of the URL here, before tokio-postgres parses the
//! rest, and the connector is built to libpq's meaning of each mode:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (the default) | if the server offers it | not checked; with `sslrootcert`, its chain is (as `verify-ca`) |
//! | `require` | always (a server without TLS is refused) | the same as `prefer` |
//! | `verify-ca` | always | signed by a root of `sslrootcert`, else of the system's |
//! | `verify-full` | always | as `verify-ca`, and issued for the URL's host name (or IP address) |
//!
//! Like tokio-postgres, lastword reads no `PG*` environment variable (`PGSSLMODE`, `PGSSLROOTCERT`,
//! `PGPASSFILE`, ...): the URL says everything. Over a Unix socket there is no TLS (the server offers
//! none): `prefer` connects in plain, `require` and stronger are refused.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_postgres::config::SslMode as PostgresSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// libpq's `sslmode`, as far as lastword speaks it (libpq's `allow` is refused: tokio-postgres
/// cannot try plain first and TLS second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it; no check of its certificate unless `sslrootcert` is given.
    Prefer,
    /// TLS always; no check of its certificate unless `sslrootcert` is given.
    Require,
    /// TLS always, with a certificate chain to a trusted root.
    VerifyCa,
    /// As [`Self::VerifyCa`], and the certificate names the host connected to.
    VerifyFull,
}

/// Where the roots of `verify-ca` and `verify-full` come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// `sslrootcert=FILE`: the PEM certificates in it.
    File(PathBuf),
    /// No `sslrootcert` (or `sslrootcert=system`, as libpq): the system's roots (rustls-native-certs).
    System,
}

/// The TLS settings of a `--store` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode.
    pub mode: SslMode,
    /// The roots, when the certificate is checked.
    pub roots: Roots,
    /// Whether the certificate's chain is checked: `verify-*`, or `sslrootcert` given (libpq).
    verify_chain: bool,
}

/// Why the TLS settings of a `--store` URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingError {
    /// An `sslmode` value that is not one of libpq's, or one lastword does not speak.
    #[error("sslmode={0} is not one of disable, prefer, require, verify-ca, verify-full")]
    Mode(String),
    /// The file of `sslrootcert` cannot be read or holds no certificate.
    #[error("cannot read root certificates from sslrootcert={path}: {detail}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// `verify-ca` or `verify-full` without `sslrootcert`, on a system without root certificates.
    #[error("no root certificate found on this system for sslmode={0}: give sslrootcert=FILE")]
    NoSystemRoots(&'static str),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

impl SslMode {
    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS is tried, and whether it is a must.
    pub fn for_postgres(self) -> PostgresSslMode {
        match self {
            SslMode::Disable => PostgresSslMode::Disable,
            SslMode::Prefer => PostgresSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PostgresSslMode::Require,
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of `url`'s query: the URL for tokio-postgres without them,
/// and the settings they give. Every other parameter is left for tokio-postgres, in its order.
pub fn split(url: &str) -> Result<(String, TlsSettings), TlsSettingError> {
    // The query starts at the first `?` after the user info (whose password may hold one), which
    // ends at the first `@`, as tokio-postgres reads it.
    let after_user = url.find('@').map_or(0, |i| i + 1);
    let Some(q) = url[after_user..].find('?').map(|i| i + after_user) else {
        return Ok((url.to_owned(), settings(None, None)?));
    };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, settings(mode.as_deref(), root)?))
}

fn settings(mode: Option<&str>, root: Option<String>) -> Result<TlsSettings, TlsSettingError> {
    let mode = match mode.unwrap_or("prefer") {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => return Err(TlsSettingError::Mode(other.to_owned())),
    };
    let given = root.as_deref().is_some_and(|r| !r.is_empty());
    let roots = match root {
        Some(r) if !r.is_empty() && r != "system" => Roots::File(PathBuf::from(r)),
        _ => Roots::System,
    };
    let verify_chain = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) || given;
    Ok(TlsSettings { mode, roots, verify_chain })
}

impl TlsSettings {
    /// The connector of these settings. Reads the roots (the file of `sslrootcert`, or the system's):
    /// blocking, call it off the runtime's threads.
    pub fn connector(&self) -> Result<MakeRustlsConnect, TlsSettingError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSettingError::Rustls(e.to_string()))?;
        let config = if !self.verify_chain {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCheck(provider)))
                .with_no_client_auth()
        } else {
            let roots = Arc::new(self.roots()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsSettingError::Rustls(e.to_string()))?;
            if self.mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, TlsSettingError> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            Roots::File(path) => {
                let fail = |detail: String| TlsSettingError::RootCert { path: path.clone(), detail };
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| fail(e.to_string()))?;
                if certs.is_empty() {
                    return Err(fail("no certificate in it".into()));
                }
                for cert in certs {
                    store.add(cert).map_err(|e| fail(e.to_string()))?;
                }
            }
            Roots::System => {
                let (added, _) =
                    store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if added == 0 {
                    return Err(TlsSettingError::NoSystemRoots(self.mode.name()));
                }
            }
        }
        Ok(store)
    }
}

/// `prefer` and `require` without `sslrootcert`: any certificate (libpq's meaning: encrypted, not
/// authenticated). The handshake's signatures are still checked, so the session is with the holder
/// of the certificate's key.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain to a trusted root, validity dates included, as webpki checks it; only the
/// name is not. webpki checks the name last, after the chain, so a name error means the chain held.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_and_the_rest_is_left() {
        let (rest, s) =
            split("postgres://u:p?w@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&connect_timeout=3")
                .expect("settings");
        assert_eq!(rest, "postgres://u:p?w@h:5/db?application_name=x&connect_timeout=3");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.roots, Roots::File("/tmp/ca.pem".into()));
        let (rest, s) = split("postgres://h/db?sslmode=require").expect("settings");
        assert_eq!((rest.as_str(), s.mode, s.verify_chain), ("postgres://h/db", SslMode::Require, false));
        let (rest, s) = split("postgres://h/db").expect("settings");
        assert_eq!((rest.as_str(), s.mode, s.verify_chain), ("postgres://h/db", SslMode::Prefer, false));
    }

    #[test]
    fn a_root_file_makes_require_check_the_chain_as_libpq_does() {
        let (_, s) = split("postgres://h/db?sslmode=require&sslrootcert=ca.pem").expect("settings");
        assert!(s.verify_chain);
        let (_, s) = split("postgres://h/db?sslmode=verify-ca&sslrootcert=system").expect("settings");
        assert_eq!((s.roots, s.verify_chain), (Roots::System, true));
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name() {
        for mode in ["allow", "verify_full", ""] {
            let err = split(&format!("postgres://u:secret@h/db?sslmode={mode}")).expect_err(mode);
            let message = err.to_string();
            assert!(message.contains(&format!("sslmode={mode} is not one of")), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn an_unreadable_or_empty_root_file_is_told_with_its_path() {
        let dir = tempfile::tempdir().expect("a directory");
        let missing = dir.path().join("missing.pem");
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            roots: Roots::File(missing.clone()),
            verify_chain: true,
        };
        let message = settings.connector().err().expect("no file").to_string();
        assert!(message.contains("missing.pem"), "{message}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("written");
        let settings = TlsSettings { roots: Roots::File(empty), ..settings };
        let message = settings.connector().err().expect("no certificate").to_string();
        assert!(message.contains("no certificate"), "{message}");
    }
}
