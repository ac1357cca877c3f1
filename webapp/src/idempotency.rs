//! Idempotency keys (IETF draft-ietf-httpapi-idempotency-key-header): a client names one
//! logical write with a key, and however often the request arrives, on whichever web server,
//! one post is stored and every repeat is answered as the first was.
//!
//! `POST /api/posts` takes it from the `Idempotency-Key` header, the guestbook form from a
//! hidden field holding a fresh key per rendered form. The key is stored with the post (a
//! unique column, `webapp/migrations`), so storing the post and claiming the key are one
//! statement; [`crate::posts::create`] finds the earlier post when the key is taken. This is
//! what lets a balancer send a POST that carries the header to a second web server when the
//! first died mid-request.

use axum::http::HeaderMap;

/// The header (case-insensitive in HTTP; the draft spells it so).
pub const HEADER: &str = "idempotency-key";

/// Longest key accepted: the column's size.
pub const MAX_LEN: usize = 64;

/// A valid key: 1 to [`MAX_LEN`] visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A key as a client sends it: the draft's structured-field string (`"abc"`, with `\"`
    /// and `\\` escapes) or the bare characters (`abc`), which name the same key.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let key = match raw
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some(quoted) => unescape(quoted).ok_or_else(invalid)?,
            None => raw.to_owned(),
        };
        let visible = key.bytes().all(|b| b.is_ascii_graphic());
        if key.is_empty() || key.len() > MAX_LEN || !visible {
            return Err(invalid());
        }
        Ok(Self(key))
    }

    /// The key of a request, from its `Idempotency-Key` header; None without one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, String> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err("send one Idempotency-Key header, not several".to_owned());
        }
        let text = value.to_str().map_err(|_| invalid())?;
        Self::parse(text).map(Some)
    }

    /// A new random key (128 bits, as 32 hex digits), for a form about to be rendered.
    pub fn fresh() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        Self(format!("{:032x}", u128::from_be_bytes(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn invalid() -> String {
    format!(
        "Idempotency-Key must be 1 to {MAX_LEN} visible ASCII characters (no spaces, no \
         control or non-ASCII characters), optionally in double quotes"
    )
}

/// The content of a structured-field string between its quotes, or None if an escape or a
/// quote in it is malformed.
fn unescape(quoted: &str) -> Option<String> {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => out.push(escaped),
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_quoted_keys_name_the_same_key() {
        let bare = IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap();
        let quoted = IdempotencyKey::parse("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"").unwrap();
        assert_eq!(bare, quoted);
        assert_eq!(
            IdempotencyKey::parse(r#""a\"b\\c""#).unwrap().as_str(),
            r#"a"b\c"#
        );
        assert!(IdempotencyKey::parse(&"x".repeat(MAX_LEN)).is_ok());
    }

    #[test]
    fn empty_long_invisible_and_malformed_keys_are_refused() {
        for bad in [
            String::new(),
            "\"\"".to_owned(),
            "x".repeat(MAX_LEN + 1),
            "two words".to_owned(),
            "tab\there".to_owned(),
            "caf\u{e9}".to_owned(),
            r#""bad \n escape""#.to_owned(),
            r#""inner"quote""#.to_owned(),
        ] {
            let error = IdempotencyKey::parse(&bad).unwrap_err();
            assert!(
                error.starts_with("Idempotency-Key must be"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn one_header_at_most() {
        let mut headers = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers), Ok(None));
        headers.append(HEADER, "k1".parse().unwrap());
        assert_eq!(
            IdempotencyKey::from_headers(&headers)
                .unwrap()
                .unwrap()
                .as_str(),
            "k1"
        );
        headers.append(HEADER, "k2".parse().unwrap());
        assert!(IdempotencyKey::from_headers(&headers).is_err());
    }

    #[test]
    fn fresh_keys_are_valid_and_differ() {
        let (a, b) = (IdempotencyKey::fresh(), IdempotencyKey::fresh());
        assert_ne!(a, b);
        assert_eq!(IdempotencyKey::parse(a.as_str()), Ok(a));
    }
}
