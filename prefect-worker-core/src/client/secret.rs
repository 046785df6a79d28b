//! A string that must never reach logs, error messages or `Debug` output (API keys,
//! basic-auth strings).

use std::fmt;

/// A secret value. `Debug` and `Display` print `***`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Only header building and redaction call this.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every known secret (and the base64 form sent in `Authorization: Basic`) with
/// `***` in texts that reach error messages, such as server details that echo a request.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(api_key: Option<&Secret>, auth_string: Option<&Secret>) -> Self {
        use base64::Engine as _;
        let mut needles = Vec::new();
        if let Some(k) = api_key {
            needles.push(k.expose().to_owned());
        }
        if let Some(a) = auth_string {
            needles.push(a.expose().to_owned());
            needles.push(base64::engine::general_purpose::STANDARD.encode(a.expose()));
        }
        needles.retain(|n| !n.is_empty());
        // Longest first, so a secret containing another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Self { needles }
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        self.needles
            .iter()
            .fold(text.to_owned(), |acc, n| acc.replace(n.as_str(), "***"))
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.needles.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_key_auth_string_and_its_base64() {
        let r = Redactor::new(Some(&Secret::new("pnu_k")), Some(&Secret::new("u:p")));
        assert_eq!(r.redact("a pnu_k b u:p c dTpw"), "a *** b *** c ***");
        assert_eq!(Redactor::new(None, Some(&Secret::new(""))).redact("x"), "x");
    }

    #[test]
    fn never_formats_the_value() {
        let s = Secret::new("pnu_abc123");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("pnu_abc123"));
        assert_eq!(s.expose(), "pnu_abc123");
    }
}
