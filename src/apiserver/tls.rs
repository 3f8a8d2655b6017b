//! The CA, the serving certificate, the admin token and the kubeconfig.
//!
//! The CA key and certificate are kept in the data directory so clients keep
//! trusting the server across restarts; the serving certificate is issued at each
//! start for the bound address (plus `localhost`).

use std::net::SocketAddr;
use std::path::Path;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::StartError;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TOKEN: &str = "admin-token";

fn tls_err(e: impl std::fmt::Display) -> StartError {
    StartError::Tls(e.to_string())
}

fn write_private(path: &Path, content: &str) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(tls_err)?;
    f.write_all(content.as_bytes()).map_err(tls_err)?;
    f.sync_all().map_err(tls_err)
}

/// The admin bearer token, created on first start.
pub(super) fn admin_token(dir: &Path) -> Result<String, StartError> {
    let path = dir.join(TOKEN);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &token)?;
    Ok(token)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "server-manager embedded API server CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

/// Loads or creates the CA, issues a serving certificate for `addr`, and returns
/// the CA (PEM) and the rustls server configuration.
pub(super) fn server_tls(
    dir: &Path,
    addr: SocketAddr,
) -> Result<(String, rustls::ServerConfig), StartError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key_path = dir.join(CA_KEY);
    let cert_path = dir.join(CA_CERT);
    let (ca_key, ca_pem) = match (
        std::fs::read_to_string(&key_path),
        std::fs::read_to_string(&cert_path),
    ) {
        (Ok(k), Ok(c)) => (KeyPair::from_pem(&k).map_err(tls_err)?, c),
        _ => {
            let key = KeyPair::generate().map_err(tls_err)?;
            let cert = ca_params().self_signed(&key).map_err(tls_err)?;
            write_private(&key_path, &key.serialize_pem())?;
            let pem = cert.pem();
            write_private(&cert_path, &pem)?;
            (key, pem)
        }
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut names = vec!["localhost".to_string()];
    names.push(addr.ip().to_string());
    if addr.ip().is_unspecified() {
        names.push("127.0.0.1".into());
    }
    let mut params = CertificateParams::new(names).map_err(tls_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "server-manager-apiserver");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = KeyPair::generate().map_err(tls_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls_err)?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)
    .map_err(tls_err)?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca_pem, config))
}

/// A kubeconfig (YAML) for `url`, trusting `ca_pem` and using `token`.
pub fn kubeconfig_yaml(url: &str, ca_pem: Option<&str>, token: &str) -> String {
    let mut cluster = serde_json::json!({ "server": url });
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "server-manager", "cluster": cluster }],
        "users": [{ "name": "admin", "user": { "token": token } }],
        "contexts": [{
            "name": "server-manager",
            "context": { "cluster": "server-manager", "user": "admin", "namespace": "default" }
        }],
        "current-context": "server-manager",
        "preferences": {},
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// The DER bytes of the first PEM block.
pub(super) fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default()
}
