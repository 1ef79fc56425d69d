//! Pure conversion of legacy service tags into Traefik Consul Catalog tags.
//!
//! Two legacy grammars are read:
//! - HinD's `https://host[/path]` tags, which HinD's consul-template turns into Caddy site
//!   addresses (`contracts/HIND.md` §2);
//! - Fabio's `urlprefix-` tags (`contracts/URLPREFIX.md`), parsed the way fabio's
//!   `parseURLPrefixTag` and `routecmd.build` do, not the way its docs say.
//!
//! Each tag becomes a typed [`Route`] ([`parse_tag`]); [`migrate_service`] turns the routes of one
//! service into Traefik tags. Anything Traefik tags cannot express is reported as a [`Finding`]
//! naming the tag, the option and the reason; nothing is dropped silently.
//!
//! # Guarantees
//! - Deterministic: the same tags give the same output, in the same order, whatever the order of
//!   the input tags.
//! - Idempotent: a service that already carries `traefik.*` tags gets nothing added.
//! - A route whose protection cannot be expressed (`auth=`, `deny=`) is not converted at all, so a
//!   migration never turns a protected route into a public one.

mod hind;
mod traefik;
mod urlprefix;

pub mod files;

pub use traefik::{HostMatcher, ParsedRule, PathMatcher, parse_rule};

use std::fmt;

use ipnet::IpNet;

/// Opening of an opaque placeholder: a piece of the tag that is not known until the job is
/// submitted (an HCL `${...}` interpolation). Private-use code points never occur in real tags.
pub const PLACEHOLDER_OPEN: char = '\u{E000}';
/// Closing of an opaque placeholder.
pub const PLACEHOLDER_CLOSE: char = '\u{E001}';
/// How fabio's `$DC` / `${DC}` (the Consul datacenter) is kept in a parsed host or path until a
/// datacenter is given.
pub const DATACENTER: &str = "${DC}";

/// Which legacy grammar a tag was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grammar {
    /// HinD's `https://host[/path]` Caddy site address.
    Hind,
    /// Fabio's `urlprefix-` route tag.
    UrlPrefix,
}

/// Which requests a route answers, by transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP and TLS requests (fabio `host/path` without a port).
    Any,
    /// Plain HTTP only (`host:80/`, `proto=http`).
    Http,
    /// TLS only (`host:443/`, HinD `https://`).
    Https,
}

/// How a host is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A literal host name.
    Exact,
    /// A fabio glob: `*` matches any run of characters (dots included), `?` one character.
    Glob,
    /// A Caddy wildcard: each `*` is one whole DNS label.
    Wildcard,
}

/// The host a route matches, lower-cased. It may contain [`DATACENTER`] and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// The host text, without port.
    pub text: String,
    /// How `text` matches.
    pub kind: HostKind,
}

/// How the request path is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// A literal string prefix (`/foo` also matches `/foot`, as in fabio).
    Prefix(String),
    /// Exactly this path (a Caddy site address path without `*`).
    Exact(String),
}

impl PathMatch {
    /// The path text.
    pub fn as_str(&self) -> &str {
        match self {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p,
        }
    }
}

/// A redirect instead of proxying (`redirect=<code>,<url>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The HTTP status code, 300–399.
    pub code: u16,
    /// The target URL as written; `$host` is the request host and `$path` the request path.
    pub target: String,
}

/// The upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    /// Plain HTTP (the default).
    Http,
    /// HTTPS (`proto=https`, `proto=grpcs`).
    Https,
    /// HTTP/2 cleartext (`proto=grpc`).
    H2c,
}

/// What the proxy sends as the upstream `Host` header (`host=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostHeader {
    /// `host=dst`: the upstream's own address.
    Upstream,
    /// `host=<name>`.
    Name(String),
}

/// An HTTP route.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    /// The host; `None` matches every host.
    pub host: Option<HostPattern>,
    /// The path matcher.
    pub path: PathMatch,
    /// Which requests, by transport security.
    pub scheme: Scheme,
    /// A port in the host other than 80/443 (fabio `host:8080/`, Caddy `https://host:8443`).
    pub alt_port: Option<u16>,
    /// `strip=/prefix`.
    pub strip: Option<String>,
    /// `prepend=/prefix`.
    pub prepend: Option<String>,
    /// `redirect=<code>,<url>`.
    pub redirect: Option<Redirect>,
    /// `allow=ip:...` source networks.
    pub allow: Vec<IpNet>,
    /// `deny=ip:...` source networks.
    pub deny: Vec<IpNet>,
    /// Upstream protocol.
    pub upstream: UpstreamScheme,
    /// `tlsskipverify=true`.
    pub tls_skip_verify: bool,
    /// `host=`.
    pub host_header: Option<HostHeader>,
    /// `weight=`, as written.
    pub weight: Option<String>,
    /// `register=`.
    pub register: Option<String>,
    /// `auth=`.
    pub auth: Option<String>,
    /// `grpcservername=`.
    pub grpc_server_name: Option<String>,
}

impl HttpRoute {
    /// A plain route for `host` and `path`, with no options.
    pub fn new(host: Option<HostPattern>, path: PathMatch, scheme: Scheme) -> HttpRoute {
        HttpRoute {
            host,
            path,
            scheme,
            alt_port: None,
            strip: None,
            prepend: None,
            redirect: None,
            allow: Vec::new(),
            deny: Vec::new(),
            upstream: UpstreamScheme::Http,
            tls_skip_verify: false,
            host_header: None,
            weight: None,
            register: None,
            auth: None,
            grpc_server_name: None,
        }
    }
}

/// What a TCP route listens for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpListen {
    /// `urlprefix-:PORT proto=tcp`: every connection to a listener on PORT.
    Port(u16),
    /// `urlprefix-host/ proto=tcp`: TLS connections with this SNI, passed through.
    Sni(HostPattern),
    /// `urlprefix-IP:PORT proto=tcp`: fabio's tcp-dynamic listener.
    Dynamic {
        /// The listen address as written.
        addr: String,
        /// The port.
        port: u16,
    },
}

/// A TCP route (`proto=tcp`).
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRoute {
    /// What it listens for.
    pub listen: TcpListen,
    /// `pxyproto=true`.
    pub proxy_protocol: bool,
    /// `allow=ip:...`.
    pub allow: Vec<IpNet>,
    /// `deny=ip:...`.
    pub deny: Vec<IpNet>,
    /// `weight=`.
    pub weight: Option<String>,
    /// `register=`.
    pub register: Option<String>,
}

/// The typed meaning of one legacy tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// An HTTP route.
    Http(HttpRoute),
    /// A TCP route.
    Tcp(TcpRoute),
}

/// Something about a tag that the migration cannot carry over as-is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Finding {
    /// The tag, as written.
    pub tag: String,
    /// The option or part of the tag concerned (`weight=0.5`, `host`, `redirect`).
    pub option: String,
    /// Why, and what happens instead.
    pub reason: String,
}

impl Finding {
    pub(crate) fn new(tag: &str, option: impl Into<String>, reason: impl Into<String>) -> Finding {
        Finding {
            tag: tag.to_string(),
            option: option.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tag {:?}: {}: {}", self.tag, self.option, self.reason)
    }
}

/// One legacy tag, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedTag {
    /// The tag as written.
    pub tag: String,
    /// Its grammar.
    pub grammar: Grammar,
    /// The route, or `None` when the tag has no route the migration can build.
    pub route: Option<Route>,
    /// What the parser could not carry over.
    pub findings: Vec<Finding>,
}

impl ParsedTag {
    /// A parse of `tag` that ends with `route` (or none) and `findings`.
    pub(crate) fn new(
        tag: &str,
        grammar: Grammar,
        route: Option<Route>,
        findings: Vec<Finding>,
    ) -> ParsedTag {
        ParsedTag {
            tag: tag.to_owned(),
            grammar,
            route,
            findings,
        }
    }

    /// A parse that stops at `finding`, which leaves nothing to convert.
    pub(crate) fn refused(
        tag: &str,
        grammar: Grammar,
        mut findings: Vec<Finding>,
        finding: Finding,
    ) -> ParsedTag {
        findings.push(finding);
        ParsedTag::new(tag, grammar, None, findings)
    }
}

/// Whether `tag` is written in one of the legacy grammars.
pub fn is_legacy_tag(tag: &str) -> bool {
    urlprefix::is_urlprefix(tag) || hind::is_hind(tag)
}

/// Whether `tag` is a Traefik tag (`traefik.` prefix, as the Consul Catalog provider reads it).
pub fn is_traefik_tag(tag: &str) -> bool {
    tag.trim_start()
        .to_ascii_lowercase()
        .starts_with("traefik.")
}

/// Parses one tag. Returns `None` for tags in neither legacy grammar (they are not routes).
pub fn parse_tag(tag: &str) -> Option<ParsedTag> {
    if urlprefix::is_urlprefix(tag) {
        Some(urlprefix::parse(tag))
    } else if hind::is_hind(tag) {
        Some(hind::parse(tag))
    } else {
        None
    }
}

/// Settings of a conversion that the tags themselves don't carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Entry point for plain HTTP.
    pub web_entrypoint: String,
    /// Entry point for TLS.
    pub websecure_entrypoint: String,
    /// `certResolver` set on TLS routers, if any.
    pub cert_resolver: Option<String>,
    /// The Consul datacenter that replaces fabio's `$DC`; routes using `$DC` are skipped without it.
    pub datacenter: Option<String>,
    /// Entry point name for a TCP port route; `{port}` is replaced by the port.
    pub tcp_entrypoint: String,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            web_entrypoint: "web".into(),
            websecure_entrypoint: "websecure".into(),
            cert_resolver: None,
            datacenter: None,
            tcp_entrypoint: "tcp-{port}".into(),
        }
    }
}

/// What one service carries before migration.
#[derive(Debug, Clone, Copy)]
pub struct ServiceInput<'a> {
    /// The service name (Consul service name): router names derive from it.
    pub name: &'a str,
    /// Its tags.
    pub tags: &'a [String],
    /// A port to pin with `loadbalancer.server.port`, when the job names a numeric port.
    pub port: Option<u16>,
}

/// The outcome of migrating one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMigration {
    /// Traefik tags to add, in a stable order.
    pub add: Vec<String>,
    /// Legacy tags to remove (only with `remove_legacy`, and only tags whose conversion is present).
    pub remove: Vec<String>,
    /// Everything that could not be carried over.
    pub findings: Vec<Finding>,
    /// The service already had Traefik tags, so nothing was added.
    pub already_converted: bool,
}

impl ServiceMigration {
    /// Whether applying it changes the tags.
    pub fn is_change(&self) -> bool {
        !self.add.is_empty() || !self.remove.is_empty()
    }

    /// The tag list after applying it to `tags`: removed tags dropped, added tags appended.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = tags
            .iter()
            .filter(|t| !self.remove.contains(t))
            .cloned()
            .collect();
        out.extend(self.add.iter().cloned());
        out
    }
}

/// Converts the legacy tags of one service into Traefik tags.
///
/// When the service already carries `traefik.*` tags it is left alone, except that with
/// `remove_legacy` the legacy tags whose Traefik counterparts are all present are removed (the last
/// step of the migration guide: add, switch, verify, remove).
pub fn migrate_service(
    service: ServiceInput<'_>,
    options: &ConvertOptions,
    remove_legacy: bool,
) -> ServiceMigration {
    let already_converted = service.tags.iter().any(|t| is_traefik_tag(t));
    let conversion = traefik::convert_service(service, options);
    let mut out = ServiceMigration {
        already_converted,
        findings: conversion.findings,
        ..Default::default()
    };
    if already_converted {
        if remove_legacy {
            for (tag, produced) in &conversion.per_tag {
                if !produced.is_empty() && produced.iter().all(|p| service.tags.contains(p)) {
                    out.remove.push(tag.clone());
                }
            }
        }
        return out;
    }
    out.add = conversion.tags;
    if remove_legacy {
        out.remove = conversion
            .per_tag
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
    }
    out
}
