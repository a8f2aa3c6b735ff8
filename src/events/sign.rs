//! Svix-compatible webhook signatures (the Standard Webhooks scheme Svix and Vital use): HMAC-SHA256 over
//! `"{id}.{timestamp}.{body}"`, keyed by the base64-decoded `whsec_` secret, sent as
//! `v1,<base64>` in `webhook-signature` and `svix-signature`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};

use crate::secret::Secret;

/// The HMAC key of a `whsec_...` secret (the prefix is optional, as in Svix's libraries).
/// The error never repeats the secret.
pub fn key_of(secret: &str) -> Result<Secret, String> {
    let b64 = secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim());
    match STANDARD.decode(b64) {
        Ok(k) if !k.is_empty() => Ok(Secret::new(hex::encode(k))),
        Ok(_) => Err("the webhook secret is empty".into()),
        Err(_) => Err("the webhook secret is not 'whsec_' followed by base64".into()),
    }
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn sign(key: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hex::decode(key.expose()).expect("keys are stored as hex by key_of");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The headers of one attempt: the unbranded `webhook-*` and the `svix-*` aliases.
pub fn headers(key: &Secret, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let signature = sign(key, id, timestamp, body);
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature.clone()),
        ("svix-id", id.to_string()),
        ("svix-timestamp", timestamp.to_string()),
        ("svix-signature", signature),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published test vector of Svix's Rust library (`test_sign`).
    #[test]
    fn matches_the_svix_test_vector() {
        let key = key_of("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            sign(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        // Any byte of the body, the id or the timestamp changes it.
        assert_ne!(
            sign(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367554, body),
            sign(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body)
        );
        let h = headers(&key, "msg_1", 5, b"{}");
        assert_eq!(
            h.iter().filter(|(n, _)| n.ends_with("-signature")).map(|(_, v)| v).collect::<std::collections::BTreeSet<_>>().len(),
            1
        );
    }

    #[test]
    fn bad_secrets_are_refused_without_being_repeated() {
        let e = key_of("whsec_not base64!").unwrap_err();
        assert!(!e.contains("not base64!"), "{e}");
        assert!(key_of("whsec_").is_err());
        // The prefix is optional.
        assert_eq!(
            key_of("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap(),
            key_of("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()
        );
    }
}
