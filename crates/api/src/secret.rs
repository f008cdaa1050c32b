//! Bearer tokens as orcd and the worker handle them: read from files only their owner can
//! access, kept as SHA-256 digests, compared in constant time, and shown to people (logs, the
//! audit log, errors) only as a short fingerprint.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Shorter tokens are refused: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// `sha256:` and the first 12 hex digits of the token's SHA-256: enough to tell tokens apart,
/// useless for guessing them.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..12])
}

/// Why a token or token file was refused; the message says how to fix it and never holds a
/// token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError(pub String);

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SecretError {}

#[derive(Clone, PartialEq, Eq)]
struct KnownToken {
    digest: [u8; 32],
    fingerprint: String,
}

/// A set of accepted tokens. Only digests are kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenSet {
    tokens: Vec<KnownToken>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.fingerprints()).finish()
    }
}

impl TokenSet {
    /// Checks each token (length, characters) and keeps its digest.
    pub fn new(tokens: &[String]) -> Result<TokenSet, SecretError> {
        for token in tokens {
            check_token(token)?;
        }
        Ok(TokenSet {
            tokens: tokens
                .iter()
                .map(|token| KnownToken {
                    digest: Sha256::digest(token.as_bytes()).into(),
                    fingerprint: fingerprint(token),
                })
                .collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether `presented` is one of the tokens. Its digest is compared with every token in
    /// constant time, so timing tells nothing about how close a guess came or which matched.
    pub fn contains(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.tokens
            .iter()
            .fold(Choice::from(0), |found, known| {
                found | known.digest.ct_eq(&digest)
            })
            .into()
    }

    pub fn fingerprints(&self) -> Vec<&str> {
        self.tokens
            .iter()
            .map(|token| token.fingerprint.as_str())
            .collect()
    }
}

fn check_token(token: &str) -> Result<(), SecretError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(SecretError(format!(
            "token {} is {} characters long; tokens need at least {MIN_TOKEN_LEN}\nhint: make one with `openssl rand -hex 32`",
            fingerprint(token),
            token.len()
        )));
    }
    // HTTP header values: visible ASCII only, or no client could send it.
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(SecretError(format!(
            "token {} contains characters other than visible ASCII\nhint: make one with `openssl rand -hex 32`",
            fingerprint(token)
        )));
    }
    Ok(())
}

/// The token of an `Authorization` header value `Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads a token file: one token per line, blank lines and `#` comments skipped. Refused if
/// group or others may read or write it, or if it holds no token.
pub fn read_token_file(path: &Path, what: &str) -> Result<Vec<String>, SecretError> {
    let text = read_private_file(path, what)?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(SecretError(format!(
            "the {what} file {} holds no token\nhint: put one token per line, e.g. `openssl rand -hex 32 > {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(tokens)
}

#[cfg(unix)]
fn read_private_file(path: &Path, what: &str) -> Result<String, SecretError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    let failed = |doing: &str, error: std::io::Error| {
        SecretError(format!(
            "{doing} the {what} file {}: {error}",
            path.display()
        ))
    };
    // Checked on the open file, so the file read is the file checked.
    let mut file = std::fs::File::open(path).map_err(|error| failed("opening", error))?;
    let mode = file
        .metadata()
        .map_err(|error| failed("reading the permissions of", error))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SecretError(format!(
            "the {what} file {} is accessible to group or others (mode {:o}); secrets must be private to their user\nhint: run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|error| failed("reading", error))?;
    Ok(text)
}

#[cfg(not(unix))]
fn read_private_file(path: &Path, what: &str) -> Result<String, SecretError> {
    std::fs::read_to_string(path).map_err(|error| {
        SecretError(format!(
            "reading the {what} file {}: {error}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "client-token-0123456789";

    fn set(tokens: &[&str]) -> TokenSet {
        TokenSet::new(&tokens.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_set_matches_its_tokens_only() {
        let tokens = set(&[TOKEN, "another-token-abcdefgh"]);
        assert!(tokens.contains(TOKEN));
        assert!(tokens.contains("another-token-abcdefgh"));
        assert!(!tokens.contains("client-token-012345678"));
        assert!(!tokens.contains(""));
        assert!(!TokenSet::default().contains(TOKEN));
    }

    #[test]
    fn debug_output_and_fingerprints_hide_the_token() {
        let shown = format!("{:?}", set(&[TOKEN]));
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains(&fingerprint(TOKEN)), "{shown}");
        assert_eq!(fingerprint(TOKEN).len(), "sha256:".len() + 12);
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(TokenSet::new(&["short".into()]).is_err());
        let spaced = TokenSet::new(&["has space in it 0123456".into()]).unwrap_err();
        assert!(spaced.to_string().contains("visible ASCII"), "{spaced}");
    }

    #[test]
    fn bearer_headers_are_parsed() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[cfg(unix)]
    fn write_secret(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[cfg(unix)]
    #[test]
    fn token_files_must_be_private_and_skip_comments() {
        let dir = std::env::temp_dir().join(format!("llorch-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!("# clients\n{TOKEN}\n\n  second-token-abcdefgh  \n");
        let private = write_secret(&dir, "private", &text, 0o600);
        assert_eq!(
            read_token_file(&private, "API token").unwrap(),
            vec![TOKEN.to_owned(), "second-token-abcdefgh".to_owned()]
        );
        for mode in [0o640, 0o604, 0o620] {
            let shared = write_secret(&dir, "shared", &text, mode);
            let error = read_token_file(&shared, "API token")
                .unwrap_err()
                .to_string();
            assert!(error.contains("chmod 600"), "{mode:o}: {error}");
            assert!(!error.contains(TOKEN), "the error leaks the token: {error}");
        }
        let empty = write_secret(&dir, "empty", "# nothing\n", 0o600);
        let error = read_token_file(&empty, "API token").unwrap_err();
        assert!(error.to_string().contains("holds no token"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
