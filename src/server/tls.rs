//! TLS (`-Z`): memcached's `ssl_*` settings turned into rustls server configurations, their
//! reload (SIGHUP, `refresh_certs`), and the TLS counters of `stats`. The sessions themselves
//! run in `net` (a per-connection transform); this module only decides what they are made of.
//!
//! One configuration per kind of listener (memcached's `-l` prefixes): the default one checks
//! client certificates as `ssl_verify_mode` says, `btls:` never asks for one, `mtls:` always
//! requires one. A reload builds all of them anew from the files and swaps them in at once:
//! connections accepted afterwards get the new certificate; sessions already running keep
//! theirs (their configuration stays alive with them).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ListenTls, TlsSettings};

/// Sessions the cache keeps with `ssl_session_cache`.
const SESSION_CACHE: usize = 4096;

/// The configurations new sessions are made with.
struct Configs {
    /// `ssl_verify_mode`'s check.
    default: Arc<ServerConfig>,
    /// `btls:` no client certificate asked for.
    no_peer: Arc<ServerConfig>,
    /// `mtls:` a client certificate required (None without `ssl_ca_cert`).
    peer: Option<Arc<ServerConfig>>,
}

/// The server's TLS state.
pub struct Tls {
    settings: TlsSettings,
    configs: RwLock<Configs>,
    /// When the certificates were last loaded, Unix seconds.
    refreshed: AtomicU64,
    /// Handshakes that failed (bad input, a refused client certificate, a plaintext client).
    pub handshake_errors: AtomicU64,
    /// Sessions that failed after their handshake.
    pub proto_errors: AtomicU64,
}

impl Tls {
    /// Loads the certificates; the error is the message to print before exiting.
    /// `mtls`: some listener requires client certificates.
    pub fn new(settings: &TlsSettings, mtls: bool) -> Result<Tls, String> {
        let configs = build(settings)?;
        if mtls && configs.peer.is_none() {
            return Err(
                "mtls: listeners need ssl_ca_cert (the CAs client certificates are \
                        checked against)"
                    .into(),
            );
        }
        Ok(Tls {
            settings: settings.clone(),
            configs: RwLock::new(configs),
            refreshed: AtomicU64::new(super::stats::unix_now()),
            handshake_errors: AtomicU64::new(0),
            proto_errors: AtomicU64::new(0),
        })
    }

    /// The settings it was started with.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Re-reads the chain, the key and the CAs (memcached's `refresh_certs`); on error the
    /// configurations in use stay and the message says why.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = build(&self.settings)?;
        let mut configs = self.configs.write().unwrap_or_else(|p| p.into_inner());
        if configs.peer.is_some() && fresh.peer.is_none() {
            return Err("the CA certificates are gone".into());
        }
        *configs = fresh;
        self.refreshed
            .store(super::stats::unix_now(), Ordering::Relaxed);
        Ok(())
    }

    /// The configuration for a new session on a listener of this kind (None: plaintext).
    pub fn config(&self, kind: ListenTls) -> Option<Arc<ServerConfig>> {
        let configs = self.configs.read().unwrap_or_else(|p| p.into_inner());
        match kind {
            ListenTls::Plain => None,
            ListenTls::Tls => Some(configs.default.clone()),
            ListenTls::TlsNoPeer => Some(configs.no_peer.clone()),
            ListenTls::TlsPeer => configs.peer.clone(),
        }
    }

    /// `stats` lines, memcached's names and order.
    pub fn stats(&self, now: u64) -> Vec<(String, String)> {
        let refreshed = self.refreshed.load(Ordering::Relaxed);
        vec![
            (
                "ssl_handshake_errors".into(),
                self.handshake_errors.load(Ordering::Relaxed).to_string(),
            ),
            (
                "ssl_proto_errors".into(),
                self.proto_errors.load(Ordering::Relaxed).to_string(),
            ),
            (
                "time_since_server_cert_refresh".into(),
                now.saturating_sub(refreshed).to_string(),
            ),
        ]
    }
}

/// What a client certificate check asks.
#[derive(Clone, Copy)]
enum Verify {
    None,
    /// Asked for, checked when sent.
    Request,
    /// Required.
    Require,
}

fn build(s: &TlsSettings) -> Result<Configs, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(chain_path) = s.chain_cert.as_deref() else {
        return Err("Error loading the certificate chain: no file given \
                    (-o ssl_chain_cert=FILE or --ssl-chain-cert)"
            .into());
    };
    let chain = load_chain(chain_path).map_err(|e| {
        format!(
            "Error loading the certificate chain: {} : {e}",
            chain_path.display()
        )
    })?;
    let key_path = s.key.as_deref().unwrap_or(chain_path);
    let key = load_key(key_path, s.keyformat)
        .map_err(|e| format!("Error loading the key: {} : {e}", key_path.display()))?;
    check_key_matches(&provider, &chain, &key)?;
    let roots = match s.ca_cert.as_deref() {
        Some(path) => Some(Arc::new(load_roots(path).map_err(|e| {
            format!("Error loading the CA certificate: {} : {e}", path.display())
        })?)),
        None => None,
    };
    let default_verify = match s.verify_mode {
        0 => Verify::None,
        1 => Verify::Request,
        // 3 (once): OpenSSL checks the certificate only at the first handshake, not at
        // renegotiations; there are none here, so it is 2.
        _ => Verify::Require,
    };
    const ALL: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS12, &rustls::version::TLS13];
    const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let versions = if s.min_version >= 3 { TLS13 } else { ALL };
    let make = |verify: Verify| -> Result<Arc<ServerConfig>, String> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("Error setting up TLS: {e}"))?;
        let builder = match verify {
            Verify::None => builder.with_no_client_auth(),
            Verify::Request | Verify::Require => {
                let Some(roots) = roots.clone() else {
                    return Err(format!(
                        "ssl_verify_mode {}: client certificates are checked against \
                         ssl_ca_cert, which is not given",
                        s.verify_mode
                    ));
                };
                let v = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                let v = if matches!(verify, Verify::Request) {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                builder.with_client_cert_verifier(
                    v.build()
                        .map_err(|e| format!("Error loading the CA certificate: {e}"))?,
                )
            }
        };
        let mut config = builder
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("Error validating the certificate: {e}"))?;
        if s.session_cache {
            config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        } else {
            // memcached's default: no session cache, so no resumption.
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    };
    Ok(Configs {
        default: make(default_verify)?,
        no_peer: make(Verify::None)?,
        peer: match roots {
            Some(_) => Some(make(Verify::Require)?),
            None => None,
        },
    })
}

/// The key must be the certificate's (OpenSSL's SSL_CTX_check_private_key).
fn check_key_matches(
    provider: &CryptoProvider,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), String> {
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("Error validating the certificate: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing);
    certified
        .keys_match()
        .map_err(|e| format!("Error validating the certificate: {e}"))
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(chain)
}

fn load_key(path: &Path, format: i64) -> Result<PrivateKeyDer<'static>, String> {
    if format == 2 {
        let der = std::fs::read(path).map_err(|e| e.to_string())?;
        return PrivateKeyDer::try_from(der).map_err(|e| e.to_string());
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| e.to_string())
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())? {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
        any = true;
    }
    if !any {
        return Err("no certificate in the file".into());
    }
    Ok(roots)
}

/// `stats settings` ssl_* lines, memcached's names, order and formats.
pub fn settings_lines(t: Option<&TlsSettings>) -> Vec<(String, String)> {
    let d = TlsSettings::default();
    let s = t.unwrap_or(&d);
    let path = |p: &Option<std::path::PathBuf>, none: &str| {
        p.as_ref()
            .map_or(none.to_string(), |p| p.display().to_string())
    };
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut out = Vec::new();
    let mut put = |k: &str, v: String| out.push((k.to_string(), v));
    put("ssl_enabled", yes(t.is_some()));
    put("ssl_chain_cert", path(&s.chain_cert, "(null)"));
    put("ssl_key", path(&s.key, "(null)"));
    put("ssl_verify_mode", s.verify_bits().to_string());
    put("ssl_keyformat", s.keyformat.to_string());
    put(
        "ssl_ciphers",
        s.ciphers.clone().unwrap_or_else(|| "NULL".into()),
    );
    put("ssl_ca_cert", path(&s.ca_cert, "NULL"));
    put("ssl_wbuf_size", s.wbuf_size.to_string());
    put("ssl_session_cache", yes(s.session_cache));
    put("ssl_kernel_tls", yes(s.kernel_tls));
    put("ssl_min_version", s.min_version_name().into());
    out
}
