//! Clients' side of the coordinator's TLS: certificate pinning by SHA-256 fingerprint.
//!
//! The coordinator makes its own CA on first start; clients and agents trust exactly the
//! certificate whose fingerprint they were given (in the token as `SECRET@sha256:HEX`, or in
//! their config), whatever names it carries. Without a pin, the system's roots apply.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub use rustls;

/// A pinned certificate: the SHA-256 of its DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid certificate fingerprint {0:?}: expected sha256: and 64 hex digits")]
pub struct BadPin(pub String);

impl Pin {
    pub fn of(der: &[u8]) -> Pin {
        Pin(Sha256::digest(der).into())
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Pin {
    type Err = BadPin;
    /// `sha256:HEX`, also upper case and with `:` between bytes (as openssl prints it).
    fn from_str(s: &str) -> Result<Pin, BadPin> {
        let bad = || BadPin(s.to_string());
        let hex = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .ok_or_else(bad)?;
        let digits: String = hex.chars().filter(|c| *c != ':').collect();
        if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Pin(out))
    }
}

/// Splits `SECRET@sha256:HEX` into the secret and its pin; a plain secret has none.
pub fn split_token(token: &str) -> Result<(String, Option<Pin>), BadPin> {
    match token.split_once('@') {
        Some((secret, pin)) => Ok((secret.to_string(), Some(pin.parse()?))),
        None => Ok((token.to_string(), None)),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config that trusts the pinned certificate (anywhere in the server's chain), or
/// the system's roots without a pin.
pub fn client_config(pin: Option<Pin>) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let config = match pin {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Arc::new(config)
}

/// Trusts a chain that contains the pinned certificate; the handshake's signatures are still
/// checked, so only the holder of that certificate's key (or its CA's) passes.
#[derive(Debug)]
struct Pinned {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let leaf = Pin::of(end_entity);
        if leaf == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        // The pin may be the CA that issued the leaf: it must then really have signed it.
        for ca in intermediates {
            if Pin::of(ca) == self.pin {
                let ca_cert = webpki::anchor_from_trusted_cert(ca)
                    .map_err(|e| rustls::Error::General(format!("pinned CA unusable: {e}")))?;
                let ee = webpki::EndEntityCert::try_from(end_entity)
                    .map_err(|e| rustls::Error::General(format!("bad server certificate: {e}")))?;
                ee.verify_for_usage(
                    self.algorithms.all,
                    &[ca_cert],
                    &[],
                    now,
                    webpki::KeyUsage::server_auth(),
                    None,
                    None,
                )
                .map_err(|e| rustls::Error::General(format!("not signed by the pinned CA: {e}")))?;
                return Ok(ServerCertVerified::assertion());
            }
        }
        Err(rustls::Error::General(format!(
            "the coordinator's certificate ({leaf}) does not match the pinned fingerprint {}",
            self.pin
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_print_and_ride_in_tokens() {
        let pin = Pin::of(b"cert");
        let text = pin.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
        assert_eq!(text.parse::<Pin>(), Ok(pin));
        let upper = format!(
            "SHA256:{}",
            pin.0
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        );
        assert_eq!(upper.parse::<Pin>(), Ok(pin));
        assert!("sha256:abc".parse::<Pin>().is_err());
        assert!("md5:00".parse::<Pin>().is_err());
        assert_eq!(
            split_token(&format!("dyno_jn_1@{text}")).unwrap(),
            ("dyno_jn_1".to_string(), Some(pin))
        );
        assert_eq!(
            split_token("dyno_jn_1").unwrap(),
            ("dyno_jn_1".into(), None)
        );
        assert!(split_token("dyno_jn_1@sha256:zz").is_err());
    }
}
