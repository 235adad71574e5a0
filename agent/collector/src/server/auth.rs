//! The bearer tokens the collector accepts (PROTOCOL.md, "Transport and handshake").

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

/// Why tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read. The OS error is in the message, so it is not also the
    /// `source()`: a chain printed whole says it once.
    #[error("cannot read the token file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// No token was given at all: every client would be refused.
    #[error("no tokens: give --token-file FILE (one token a line) or LASTWORD_TOKENS=t1,t2")]
    None,
    /// A token holds a character that cannot travel in an HTTP header.
    #[error("a token holds whitespace or a control character (token {index} of {source_name})")]
    Unusable {
        /// Where it came from.
        source_name: String,
        /// Its position there, from 1.
        index: usize,
    },
}

/// The set of valid tokens. Several may be valid at once (one per application, say). Each is kept as
/// its SHA-256 only: comparisons are between digests of one length, whatever the tokens' lengths.
#[derive(Clone, Default)]
pub struct Tokens(Vec<[u8; 32]>);

/// The digest a token is compared by.
fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.0.len())
    }
}

impl Tokens {
    /// Tokens from a file (one a line; blank lines and lines starting with `#` are skipped) and from the
    /// value of `LASTWORD_TOKENS` (comma-separated). At least one token must come out.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Self, TokenError> {
        let mut tokens = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|error| TokenError::Read { path: path.to_owned(), error })?;
            let lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
            Self::push_all(&mut tokens, lines, &path.display().to_string())?;
        }
        if let Some(env) = env {
            let items = env.split(',').map(str::trim).filter(|t| !t.is_empty());
            Self::push_all(&mut tokens, items, "LASTWORD_TOKENS")?;
        }
        if tokens.is_empty() {
            return Err(TokenError::None);
        }
        Ok(Self(tokens))
    }

    fn push_all<'a>(
        into: &mut Vec<[u8; 32]>,
        items: impl Iterator<Item = &'a str>,
        source_name: &str,
    ) -> Result<(), TokenError> {
        for (i, token) in items.enumerate() {
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(TokenError::Unusable { source_name: source_name.to_owned(), index: i + 1 });
            }
            into.push(digest(token.as_bytes()));
        }
        Ok(())
    }

    /// Tokens given directly (for tests and embedders).
    pub fn from_list<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> Self {
        Self(tokens.into_iter().map(|t| digest(t.into().as_bytes())).collect())
    }

    /// Whether `token` is one of them. The given token's digest is compared with every valid one in
    /// full, in constant time (`subtle`), whatever matches: the time taken says nothing about which
    /// bytes were right, nor, since digests have one length, about a valid token's length.
    pub fn accepts(&self, token: &str) -> bool {
        let given = digest(token.as_bytes());
        let found = self.0.iter().fold(Choice::from(0), |found, valid| found | valid[..].ct_eq(&given[..]));
        bool::from(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# comment\n\n  alpha  \nbeta\n").unwrap();
        let tokens = Tokens::load(Some(&file), Some("gamma, ,delta")).unwrap();
        for t in ["alpha", "beta", "gamma", "delta"] {
            assert!(tokens.accepts(t), "{t}");
        }
        assert!(!tokens.accepts("alph"));
        assert!(!tokens.accepts("alphaa"), "nor a longer one");
        assert!(!tokens.accepts(""));
        assert!(!tokens.accepts("# comment"));
    }

    #[test]
    fn no_token_at_all_is_an_error() {
        assert!(matches!(Tokens::load(None, Some(" , ")), Err(TokenError::None)));
        assert!(matches!(Tokens::load(None, None), Err(TokenError::None)));
    }

    #[test]
    fn a_token_with_a_space_is_refused() {
        assert!(matches!(Tokens::load(None, Some("a b")), Err(TokenError::Unusable { .. })));
    }
}
