//! The plumbing every section shares: the [`Validator`] that collects errors and warnings with
//! their field paths, and the checks for values that appear in several sections (durations,
//! names, addresses, paths).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::spec::FieldError;
use crate::spec::duration::parse_duration;

/// A listen address: optional host (empty means all interfaces) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenAddress {
    /// IP literal or hostname; `None` for all interfaces.
    pub host: Option<String>,
    /// TCP port, 1–65535.
    pub port: u16,
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::spec::model::ListenAddr::from(self).fmt(f)
    }
}

impl ListenAddress {
    /// Parses `[host]:port` (`:80`, `0.0.0.0:80`, `[::1]:443`, `localhost:8080`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let example = "expected [host]:port such as \":80\", \"0.0.0.0:8080\" or \"[::1]:443\"";
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("{text:?} has no port; {example}"));
        };
        let port = parse_port(port).map_err(|e| format!("{text:?}: {e}"))?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let Some(inner) = inner.strip_suffix(']') else {
                return Err(format!("{text:?} has an unclosed '['; {example}"));
            };
            match inner.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => Some(inner.to_owned()),
                _ => {
                    return Err(format!(
                        "{text:?}: {inner:?} is not an IPv6 address; {example}"
                    ));
                }
            }
        } else if host.is_empty() {
            None
        } else if host.parse::<IpAddr>().is_ok() || is_hostname(host) {
            if host.contains(':') {
                return Err(format!(
                    "{text:?}: put IPv6 addresses in brackets; {example}"
                ));
            }
            Some(host.to_owned())
        } else {
            return Err(format!(
                "{text:?}: {host:?} is neither an IP address nor a hostname; {example}"
            ));
        };
        Ok(Self { host, port })
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range; ports are 1-65535")),
        Err(_) => Err(format!("port {text:?} is not a number; ports are 1-65535")),
    }
}

/// Collects every problem of a document, so all of them are reported at once.
#[derive(Default)]
pub(super) struct Validator {
    pub(super) errors: Vec<FieldError>,
    pub(super) warnings: Vec<FieldError>,
    /// Every entry point name, for checks that refer to entry points.
    pub(super) entry_point_names: BTreeSet<String>,
}

impl Validator {
    pub(super) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(FieldError::new(path, message));
    }

    pub(super) fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    pub(super) fn positive_duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        let d = self.duration(path, text)?;
        if d.is_zero() {
            self.error(path, format!("{text:?} must be longer than zero"));
            return None;
        }
        Some(d)
    }

    /// A provider poll interval: Traefik builds a ticker from it, and polling Consul or Nomad
    /// more often than once a second only loads the servers.
    pub(super) fn refresh_interval(&mut self, path: &str, text: &str) -> Option<Duration> {
        let d = self.positive_duration(path, text)?;
        if d < Duration::from_secs(1) {
            self.error(
                path,
                format!("{text:?} is shorter than 1s; Traefik polls at this interval, use at least \"1s\" (default \"15s\")"),
            );
            return None;
        }
        Some(d)
    }

    pub(super) fn hostname(&mut self, path: &str, text: &str) {
        if !is_hostname(text) {
            self.error(
                path,
                format!("{text:?} is not a hostname; use DNS labels of letters, digits and '-' separated by dots (e.g. example.com)"),
            );
        }
    }

    pub(super) fn dns_label(&mut self, path: &str, text: &str) {
        let ok = !text.is_empty()
            && text.len() <= 63
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if !ok {
            self.error(path, format!("{text:?} is not a DNS label; use 1-63 lowercase letters, digits and '-' (e.g. default)"));
        }
    }

    pub(super) fn identifier(&mut self, path: &str, text: &str) {
        if !is_identifier(text) {
            self.error(
                path,
                format!("{text:?} is not a valid name; use 1-128 letters, digits, '-', '_' or '.'"),
            );
        }
    }

    pub(super) fn nomad_id(&mut self, path: &str, text: &str) {
        if !is_identifier(text) {
            self.error(path, format!("{text:?} is not a Nomad job ID; use 1-128 letters, digits, '-', '_' or '.' (e.g. proxy)"));
        }
    }

    pub(super) fn host_port(&mut self, path: &str, text: &str) {
        match ListenAddress::parse(text) {
            Ok(ListenAddress { host: None, .. }) => {
                self.error(path, format!("{text:?} needs a host (e.g. 127.0.0.1:8500)"));
            }
            Ok(_) => {}
            Err(e) => self.error(path, e),
        }
    }

    pub(super) fn listen(&mut self, path: &str, text: &str) -> Option<ListenAddress> {
        match ListenAddress::parse(text) {
            Ok(a) => Some(a),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    pub(super) fn http_url(&mut self, path: &str, text: &str, example: &str) {
        match url::Url::parse(text) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                if u.path() != "/" && !u.path().is_empty() {
                    self.error(
                        path,
                        format!("{text:?} must not have a path (e.g. {example})"),
                    );
                }
            }
            _ => self.error(
                path,
                format!("{text:?} is not an http(s) URL with a host (e.g. {example})"),
            ),
        }
    }

    pub(super) fn absolute_path(&mut self, path: &str, text: &str) -> Option<PathBuf> {
        let p = Path::new(text);
        if !p.is_absolute() {
            self.error(
                path,
                format!("{text:?} is not an absolute path (e.g. /pv/CERTS)"),
            );
            return None;
        }
        if p.components().any(|c| c == Component::ParentDir) {
            self.error(path, format!("{text:?} must not contain '..'"));
            return None;
        }
        if text.chars().any(char::is_control) {
            self.error(path, "must not contain control characters");
            return None;
        }
        Some(p.to_path_buf())
    }

    pub(super) fn kv_key(&mut self, path: &str, key: &str) {
        if key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|s| s == ".." || s == ".")
            || key.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.error(path, format!("{key:?} is not a Consul KV key; use a path without a leading '/' or spaces (e.g. proxy-operator/secrets/basic-auth)"));
        }
    }
}

/// A Nomad or Consul name (job ID, namespace, datacenter): 1–128 letters, digits, `-`, `_`, `.`.
fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// RFC 1123 hostname: dot-separated labels of 1–63 letters, digits and `-`, at most 253 bytes.
pub(crate) fn is_hostname(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}
