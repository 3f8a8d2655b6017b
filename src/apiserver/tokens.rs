//! Bound ServiceAccount tokens (the TokenRequest API, `kubectl create token`).
//!
//! A token is a JWT signed with HMAC-SHA256 under a key derived from the
//! admin token (so it survives restarts and is never stored), carrying the
//! claims kube-apiserver puts in its own: issuer, audiences, `exp`/`iat`/`nbf`,
//! `sub` = `system:serviceaccount:NS:NAME` and, under `kubernetes.io`, the
//! ServiceAccount's namespace, name and uid and the object the token is bound
//! to (a Secret). The server accepts such a token while it has not expired,
//! names the API server among its audiences, and the ServiceAccount (and the
//! bound object) still exist with the same uid.

use base64::Engine;
use serde_json::{Value, json};

use super::auth::User;
use super::store::{ResKey, State};

/// The issuer and default audience of the tokens (kube-apiserver's defaults).
pub(super) const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The token signing key.
pub(super) struct Signer {
    key: ring::hmac::Key,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Signer {
    /// The key derived from the admin token.
    pub fn new(admin_token: &str) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"server-manager service account token signing key\0");
        h.update(admin_token.as_bytes());
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize()),
        }
    }

    /// A signed token with these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = b64(claims.to_string().as_bytes());
        let input = format!("{header}.{payload}");
        let tag = ring::hmac::sign(&self.key, input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    }

    /// The claims of a token this signer made (`None`: not one, or altered).
    pub fn verify(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let dec = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let tag = dec.decode(s).ok()?;
        ring::hmac::verify(&self.key, format!("{h}.{p}").as_bytes(), &tag).ok()?;
        serde_json::from_slice(&dec.decode(p).ok()?).ok()
    }
}

/// The user a bound token authenticates as, if it is valid now.
pub(super) fn user(signer: &Signer, st: &State, token: &str, now: i64) -> Option<User> {
    let claims = signer.verify(token)?;
    let exp = claims["exp"].as_i64()?;
    let nbf = claims["nbf"].as_i64().unwrap_or(0);
    if now >= exp || now + 60 < nbf {
        return None;
    }
    let audiences = claims["aud"].as_array()?;
    if !audiences.iter().any(|a| a.as_str() == Some(ISSUER)) {
        return None;
    }
    let k = &claims["kubernetes.io"];
    let ns = k["namespace"].as_str()?;
    let sa = k["serviceaccount"]["name"].as_str()?;
    let sa_obj = st.get(&ResKey::new("", "serviceaccounts"), ns, sa)?;
    if sa_obj["metadata"]["uid"].as_str() != k["serviceaccount"]["uid"].as_str() {
        return None;
    }
    if let Some(secret) = k.get("secret") {
        let name = secret["name"].as_str()?;
        let obj = st.get(&ResKey::new("", "secrets"), ns, name)?;
        if obj["metadata"]["uid"].as_str() != secret["uid"].as_str() {
            return None;
        }
    }
    Some(User::service_account(ns, sa))
}

/// The claims of a new token (`bound`: the bound Secret's name and uid).
pub(super) fn claims(
    ns: &str,
    sa: &str,
    sa_uid: &str,
    audiences: &[String],
    now: i64,
    expiration_seconds: i64,
    bound: Option<(&str, &str)>,
) -> Value {
    let mut k = json!({"namespace": ns, "serviceaccount": {"name": sa, "uid": sa_uid}});
    if let Some((name, uid)) = bound {
        k["secret"] = json!({"name": name, "uid": uid});
    }
    json!({
        "aud": audiences,
        "exp": now + expiration_seconds,
        "iat": now,
        "iss": ISSUER,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k,
        "nbf": now,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_key_and_unaltered() {
        let s = Signer::new("admin-token");
        let c = claims("default", "robot", "u1", &[ISSUER.into()], 1000, 3600, None);
        let t = s.sign(&c);
        assert_eq!(s.verify(&t), Some(c));
        assert!(Signer::new("other").verify(&t).is_none());
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64(br#"{"sub":"system:serviceaccount:kube-system:admin"}"#);
        parts[1] = &forged;
        assert!(s.verify(&parts.join(".")).is_none());
        assert!(s.verify("not-a-token").is_none());
    }
}
