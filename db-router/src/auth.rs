//! `mysql_native_password`, both ways: checking a client's answer against a configured
//! user, and answering a backend's challenge with the router's backend account; and
//! MariaDB's `client_ed25519`, for a backend account `IDENTIFIED VIA ed25519`.
//!
//! The client proves it knows the password without sending it:
//! `answer = SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))`. The router keeps
//! only `SHA1(SHA1(password))` per user, as a MySQL server does, and recovers `SHA1(password)`
//! from the answer to check it hashes to that.
//!
//! Clients log in to the router with mysql_native_password only: one that asks for another
//! plugin (`mariadb --default-auth=client_ed25519`) is switched to it, as a MariaDB server
//! switches a client to the plugin of the account. The router's users are its own (no
//! `mysql.user` behind them), so there is no other account's plugin to honour.

use sha1::{Digest, Sha1};

pub const NATIVE_PASSWORD: &str = "mysql_native_password";
/// The client side of MariaDB's `ed25519` authentication plugin.
pub const ED25519: &str = "client_ed25519";

/// The 20 random bytes a server challenges with: printable, no NUL (clients read the
/// second part as NUL-terminated).
pub fn new_scramble() -> [u8; 20] {
    let mut scramble = [0u8; 20];
    if getrandom::fill(&mut scramble).is_err() {
        // The OS random source failing is not something to serve through; mix the clock
        // in so the scramble at least differs per connection.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes();
        for (i, b) in scramble.iter_mut().enumerate() {
            *b ^= nanos[i % nanos.len()];
        }
    }
    for b in &mut scramble {
        *b = 0x21 + *b % 0x5E;
    }
    scramble
}

/// What a server stores for a password: `SHA1(SHA1(password))`. Empty for no password.
pub fn stored_hash(password: &str) -> Option<[u8; 20]> {
    (!password.is_empty()).then(|| Sha1::digest(Sha1::digest(password.as_bytes())).into())
}

/// The client's answer to `scramble` for `password` (empty when the password is empty).
pub fn answer(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mix: [u8; 20] = Sha1::new()
        .chain_update(scramble)
        .chain_update(stage2)
        .finalize()
        .into();
    stage1.iter().zip(mix).map(|(a, b)| a ^ b).collect()
}

/// `client_ed25519`'s answer to the server's `nonce` for `password`: the Ed25519 signature of
/// the nonce, with the password in place of the 32-byte secret key seed (MariaDB's
/// `crypto_sign`: SHA-512 of the password, its first half clamped as the secret scalar, its
/// second half the prefix the signature's own nonce is hashed from). The server checks it
/// with the public key `PASSWORD('...')` stored for the account.
pub fn ed25519_answer(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    use ed25519_dalek::VerifyingKey;
    use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
    use sha2::Sha512;
    let hash: [u8; 64] = Sha512::digest(password).into();
    let key = ExpandedSecretKey::from_bytes(&hash);
    let public = VerifyingKey::from(&key);
    raw_sign::<Sha512>(&key, nonce, &public).to_bytes().to_vec()
}

/// Whether `answer` proves knowledge of the password whose stored hash is `stored`.
pub fn verify(stored: Option<&[u8; 20]>, scramble: &[u8], answer: &[u8]) -> bool {
    let Some(stored) = stored else {
        return answer.is_empty();
    };
    if answer.len() != 20 {
        return false;
    }
    let mix: [u8; 20] = Sha1::new()
        .chain_update(scramble)
        .chain_update(stored)
        .finalize()
        .into();
    let stage1: Vec<u8> = answer.iter().zip(mix).map(|(a, b)| a ^ b).collect();
    let candidate: [u8; 20] = Sha1::digest(&stage1).into();
    // Constant time: a timing difference must not tell how much of the answer was right.
    candidate
        .iter()
        .zip(stored)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let scramble = new_scramble();
        assert!(scramble.iter().all(|&b| (0x21..0x7F).contains(&b)));
        let stored = stored_hash("secret");
        assert!(verify(
            stored.as_ref(),
            &scramble,
            &answer(b"secret", &scramble)
        ));
        assert!(!verify(
            stored.as_ref(),
            &scramble,
            &answer(b"Secret", &scramble)
        ));
        assert!(!verify(stored.as_ref(), &scramble, &[]));
        assert!(verify(None, &scramble, &[]));
        assert!(!verify(None, &scramble, &answer(b"x", &scramble)));
    }

    #[test]
    fn answer_matches_a_known_mysql_value() {
        // From the MySQL protocol: scramble of twenty 'a's, password "password".
        let scramble = [b'a'; 20];
        let expected = answer(b"password", &scramble);
        let stored = stored_hash("password");
        assert!(verify(stored.as_ref(), &scramble, &expected));
        assert_eq!(
            stored.map(hex),
            Some("2470c0c06dee42fd1618bb99005adca2ec9d1e19".to_string()),
            "SHA1(SHA1('password')), as in mysql.user's *2470C0C0... hash"
        );
    }

    #[test]
    fn an_ed25519_answer_is_a_signature_of_the_nonce_by_the_passwords_key() {
        use ed25519_dalek::hazmat::ExpandedSecretKey;
        use ed25519_dalek::{Signature, VerifyingKey};
        use sha2::Sha512;
        let nonce = [7u8; 32];
        let answer = ed25519_answer(b"secret", &nonce);
        assert_eq!(answer.len(), 64);
        let hash: [u8; 64] = Sha512::digest(b"secret").into();
        let public = VerifyingKey::from(&ExpandedSecretKey::from_bytes(&hash));
        let signature = Signature::from_slice(&answer).unwrap();
        assert!(public.verify_strict(&nonce, &signature).is_ok());
        assert!(public.verify_strict(&[8u8; 32], &signature).is_err());
        assert_ne!(answer, ed25519_answer(b"Secret", &nonce));
    }

    fn hex(bytes: [u8; 20]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
