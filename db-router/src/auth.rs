//! `mysql_native_password`, both ways: checking a client's answer against a configured
//! user, and answering a backend's challenge with the router's backend account.
//!
//! The client proves it knows the password without sending it:
//! `answer = SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))`. The router keeps
//! only `SHA1(SHA1(password))` per user, as a MySQL server does, and recovers `SHA1(password)`
//! from the answer to check it hashes to that.

use sha1::{Digest, Sha1};

pub const NATIVE_PASSWORD: &str = "mysql_native_password";

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

    fn hex(bytes: [u8; 20]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
