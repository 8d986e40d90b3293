//! Who may talk to this server: SASL PLAIN over the binary protocol (`-S`, the password file of
//! MEMCACHED_SASL_PWDB or `--sasl-pwdb`, read at every attempt as memcached reads it) and
//! memcached's text authentication (`-Y`, its file read at start and again on SIGHUP).
//! Replication peers present the same credentials in their handshake.
//!
//! Passwords are compared in constant time (`subtle`), against every entry, so the time of a
//! failed attempt says nothing about which user or how much of a password matched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use subtle::{Choice, ConstantTimeEq};

use crate::config::Config;
use crate::protocol::auth::{parse_password_file, Entries, PasswordEnd};

/// The server's authentication settings and credentials.
pub struct Auth {
    sasl_pwdb: Option<PathBuf>,
    text: Option<(PathBuf, RwLock<Arc<Entries>>)>,
}

fn load(path: &Path, end: PasswordEnd) -> Result<Entries, String> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "Could not open password file [{}] for reading: {e}",
            path.display()
        )
    })?;
    parse_password_file(&text, end).map_err(|line| {
        format!(
            "Password file [{}] has a malformed entry on line {line}. Should be 'user:password'",
            path.display()
        )
    })
}

fn matches(entries: &Entries, user: &[u8], password: &[u8]) -> bool {
    let mut found = Choice::from(0);
    for (u, p) in entries {
        found |= u.as_slice().ct_eq(user) & p.as_slice().ct_eq(password);
    }
    found.into()
}

impl Auth {
    /// Reads the files `config` names; a missing or malformed one is a startup error.
    pub fn new(config: &Config) -> Result<Auth, String> {
        if let Some(path) = &config.sasl_pwdb {
            load(path, PasswordEnd::Colon)?;
        }
        let text = match &config.auth_file {
            Some(path) => Some((
                path.clone(),
                RwLock::new(Arc::new(load(path, PasswordEnd::Line)?)),
            )),
            None => None,
        };
        Ok(Auth {
            sasl_pwdb: config.sasl_pwdb.clone(),
            text,
        })
    }

    /// Whether binary connections must authenticate with SASL first.
    pub fn sasl(&self) -> bool {
        self.sasl_pwdb.is_some()
    }

    /// Whether text connections must authenticate with `-Y`'s token first.
    pub fn text(&self) -> bool {
        self.text.is_some()
    }

    /// The `-Y` file's path (for `stats settings`).
    pub fn text_file(&self) -> Option<&Path> {
        self.text.as_ref().map(|(p, _)| p.as_path())
    }

    /// Checks SASL credentials against the password file as it is now.
    pub fn check_sasl(&self, user: &[u8], password: &[u8]) -> bool {
        let Some(path) = &self.sasl_pwdb else {
            return false;
        };
        match load(path, PasswordEnd::Colon) {
            Ok(entries) => matches(&entries, user, password),
            Err(e) => {
                log::warn!("SASL: {e}");
                false
            }
        }
    }

    /// Checks `-Y` credentials.
    pub fn check_text(&self, user: &[u8], password: &[u8]) -> bool {
        let Some((_, entries)) = &self.text else {
            return false;
        };
        let entries = entries.read().unwrap_or_else(|e| e.into_inner()).clone();
        matches(&entries, user, password)
    }

    /// What this server presents to its replication peers when SASL is on: the first entry of
    /// its own password file, as a PLAIN message (every member is given that user).
    pub fn peer_plain(&self) -> Option<Vec<u8>> {
        let path = self.sasl_pwdb.as_ref()?;
        let entries = match load(path, PasswordEnd::Colon) {
            Ok(e) => e,
            Err(e) => {
                log::warn!("replication: {e}; dialing without credentials");
                return None;
            }
        };
        let (user, password) = entries.first()?;
        let mut plain = vec![0];
        plain.extend_from_slice(user);
        plain.push(0);
        plain.extend_from_slice(password);
        Some(plain)
    }

    /// Re-reads the `-Y` file (SIGHUP); on an error the old entries stay.
    pub fn reload(&self) -> Result<(), String> {
        if let Some((path, entries)) = &self.text {
            let fresh = load(path, PasswordEnd::Line)?;
            *entries.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_compared() {
        let entries = vec![
            (b"bob".to_vec(), b"pw".to_vec()),
            (b"alice".to_vec(), b"secret".to_vec()),
        ];
        assert!(matches(&entries, b"alice", b"secret"));
        assert!(matches(&entries, b"bob", b"pw"));
        assert!(!matches(&entries, b"bob", b"secret"));
        assert!(!matches(&entries, b"bob", b"p"));
        assert!(!matches(&entries, b"", b""));
    }
}
