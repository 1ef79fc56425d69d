//! Connection settings, read the way HashiCorp's own CLIs read them.
//!
//! [`ClientConfig::consul_from_env`] and [`ClientConfig::nomad_from_env`] are pure functions of an
//! environment lookup, so they are tested without touching the process environment; command-line
//! flags ([`ConsulFlags`](super::ConsulFlags), [`NomadFlags`](super::NomadFlags)) are applied on top with [`ClientConfig::apply`].

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::flags::{SettingNames, VerifyVariable};
use super::{Api, Error};

/// An ACL token. It only leaves this type through [`Token::expose`], which the HTTP layer calls
/// to fill a request header; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a secret. Surrounding whitespace (a trailing newline in a token file) is dropped.
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into().trim().to_owned())
    }

    /// The secret itself, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the token is empty (an empty variable means "no token", as in the CLIs).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the API listens.
///
/// An address may carry basic-auth credentials (`https://user:pass@consul:8501`, which reqwest
/// moves into an `Authorization` header). `Display` and `Debug` show such an address with the
/// password replaced, so it can be logged and put into error texts.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://` or `https://` host and port.
    Tcp(Url),
    /// A Unix domain socket (`unix:///path/to/sock`); requests go over plain HTTP.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses an address the way the CLIs do: `host:port` (scheme from `https_default`),
    /// `http://…`, `https://…` or `unix://…`.
    pub fn parse(value: &str, https_default: bool) -> Result<Endpoint, Error> {
        let invalid = |reason: &'static str| Error::InvalidAddress {
            value: redact_userinfo(value),
            reason,
        };
        let value = value.trim();
        if let Some(path) = value.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(invalid("a unix:// address needs a socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let with_scheme = if value.contains("://") {
            value.to_owned()
        } else if https_default {
            format!("https://{value}")
        } else {
            format!("http://{value}")
        };
        let url = Url::parse(&with_scheme).map_err(|_| invalid("not a URL or host:port"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http, https or unix"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the address has no host"));
        }
        Ok(Endpoint::Tcp(url))
    }

    /// True when requests use TLS.
    pub fn is_https(&self) -> bool {
        matches!(self, Endpoint::Tcp(url) if url.scheme() == "https")
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(url) if url.password().is_some() || !url.username().is_empty() => {
                let mut shown = url.clone();
                // These cannot fail: a URL with credentials has a host. A lone user name is
                // hidden too, since some people put a token there.
                if url.password().is_some() {
                    let _ = shown.set_password(Some(REDACTED_PASSWORD));
                } else {
                    let _ = shown.set_username(REDACTED_PASSWORD);
                }
                write!(f, "{}", shown.as_str().trim_end_matches('/'))
            }
            Endpoint::Tcp(url) => write!(f, "{}", url.as_str().trim_end_matches('/')),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(_) => f.debug_tuple("Tcp").field(&self.to_string()).finish(),
            Endpoint::Unix(path) => f.debug_tuple("Unix").field(path).finish(),
        }
    }
}

/// What an address shows in place of its password.
const REDACTED_PASSWORD: &str = "redacted";

/// An address as the user wrote it, with any `user:password@` part replaced, for error texts
/// about addresses that did not even parse.
fn redact_userinfo(value: &str) -> String {
    let (scheme, rest) = match value.find("://") {
        Some(i) => value.split_at(i + 3),
        None => ("", value),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}<redacted>{}", &rest[at..]),
        None => value.to_owned(),
    }
}

/// TLS material and verification settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) that sign the server certificate.
    pub ca_file: Option<PathBuf>,
    /// Directory of PEM CA certificates.
    pub ca_path: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key: Option<PathBuf>,
    /// Name to verify the server certificate against instead of the address's host.
    pub server_name: Option<String>,
    /// Accept any server certificate. For labs only; logged as a warning when a client is built.
    pub skip_verify: bool,
}

/// Request budget of one API client (a token bucket shared by all clones of the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed back to back before the sustained rate applies.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// A limit of `per_second`, with a burst of the same size.
    pub fn per_second(per_second: NonZeroU32) -> RateLimit {
        RateLimit {
            per_second,
            burst: per_second,
        }
    }
}

/// Retry budget for retryable failures (connect errors, timeouts, 429, transient 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retries.
    pub max_retries: usize,
    /// Cap of the first backoff step (full jitter picks a delay in `0..=cap`).
    pub min_delay: Duration,
    /// Largest backoff cap.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Timeouts of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connection establishment.
    pub connect: Duration,
    /// Whole request, for requests that do not block.
    pub request: Duration,
    /// Added to `wait + wait/16` (the server's own jitter) for a blocking query, so a dead
    /// connection is noticed shortly after the server would have answered.
    pub blocking_margin: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            blocking_margin: Duration::from_secs(5),
        }
    }
}

/// Everything needed to build a client of one API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Which API this talks to.
    pub api: Api,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// ACL token sent in `X-Consul-Token` / `X-Nomad-Token`.
    pub token: Option<Token>,
    /// File holding the token (`CONSUL_HTTP_TOKEN_FILE`); read when the client is built and wins
    /// over `token` when non-empty, as in Consul's Go client.
    pub token_file: Option<PathBuf>,
    /// TLS settings (used when the endpoint is `https`).
    pub tls: TlsSettings,
    /// Namespace (`?ns=` for Consul Enterprise, `?namespace=` for Nomad). Sent only when set.
    /// Consul namespaces are an Enterprise feature: Consul CE answers every KV, session,
    /// catalog and health request carrying `?ns=` with 400 "Invalid query parameter: \"ns\" -
    /// Namespaces are a Consul Enterprise feature", so leave `CONSUL_NAMESPACE` unset on CE.
    pub namespace: Option<String>,
    /// Nomad region (`?region=`); ignored for Consul.
    pub region: Option<String>,
    /// Request rate limit.
    pub rate_limit: RateLimit,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// Default request rate to Consul.
pub const CONSUL_DEFAULT_RATE: NonZeroU32 = match NonZeroU32::new(50) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};
/// Default request rate to Nomad.
pub const NOMAD_DEFAULT_RATE: NonZeroU32 = match NonZeroU32::new(20) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

impl ClientConfig {
    /// Consul's defaults: `http://127.0.0.1:8500`, no token, 50 requests/s.
    pub fn consul_default() -> ClientConfig {
        ClientConfig::defaults(SettingNames::of(Api::Consul))
    }

    /// Nomad's defaults: `http://127.0.0.1:4646`, no token, 20 requests/s.
    pub fn nomad_default() -> ClientConfig {
        ClientConfig::defaults(SettingNames::of(Api::Nomad))
    }

    fn defaults(names: &SettingNames) -> ClientConfig {
        ClientConfig {
            api: names.api,
            endpoint: Endpoint::Tcp(
                Url::parse(&format!("http://{}", names.default_addr))
                    .expect("the table's default address parses"),
            ),
            token: None,
            token_file: None,
            tls: TlsSettings::default(),
            namespace: None,
            region: None,
            rate_limit: RateLimit::per_second(names.default_rate),
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
        }
    }

    /// A config pointing at `address` with the API's defaults otherwise (tests, the twin).
    pub fn for_address(api: Api, address: &str) -> Result<ClientConfig, Error> {
        let mut config = ClientConfig::defaults(SettingNames::of(api));
        config.endpoint = Endpoint::parse(address, false)?;
        Ok(config)
    }

    /// Reads `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`,
    /// `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`,
    /// `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_SSL_VERIFY` and `CONSUL_NAMESPACE` through `lookup`.
    /// Unset and empty variables mean the same thing, as in Consul's Go client.
    pub fn consul_from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<ClientConfig, Error> {
        ClientConfig::from_env(Api::Consul, lookup)
    }

    /// Reads `NOMAD_ADDR`, `NOMAD_TOKEN`, `NOMAD_CACERT`, `NOMAD_CAPATH`, `NOMAD_CLIENT_CERT`,
    /// `NOMAD_CLIENT_KEY`, `NOMAD_TLS_SERVER_NAME`, `NOMAD_SKIP_VERIFY`, `NOMAD_NAMESPACE` and
    /// `NOMAD_REGION` through `lookup`.
    pub fn nomad_from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<ClientConfig, Error> {
        ClientConfig::from_env(Api::Nomad, lookup)
    }

    /// The one reader of both APIs' variables ([`ClientConfig::consul_from_env`],
    /// [`ClientConfig::nomad_from_env`]), each under the name its own CLI reads.
    pub fn from_env(
        api: Api,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, Error> {
        let names = SettingNames::of(api);
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = ClientConfig::defaults(names);
        let https = match names.https_env.and_then(|name| Some((name, get(name)?))) {
            Some((name, v)) => parse_bool(name, &v)?,
            None => false,
        };
        if let Some(addr) = get(names.addr.env) {
            config.endpoint = Endpoint::parse(&addr, https)?;
        } else if https {
            config.endpoint = Endpoint::parse(names.default_addr, true)?;
        }
        config.token = get(names.token_env).map(Token::new);
        config.token_file = names.token_file_env.and_then(get).map(PathBuf::from);
        config.tls.ca_file = get(names.ca_file.env).map(PathBuf::from);
        config.tls.ca_path = get(names.ca_path.env).map(PathBuf::from);
        config.tls.client_cert = get(names.client_cert.env).map(PathBuf::from);
        config.tls.client_key = get(names.client_key.env).map(PathBuf::from);
        config.tls.server_name = get(names.server_name.env);
        let (verify_env, means_skip) = match names.skip_verify_env {
            VerifyVariable::Skip(name) => (name, true),
            VerifyVariable::Verify(name) => (name, false),
        };
        if let Some(v) = get(verify_env) {
            config.tls.skip_verify = parse_bool(verify_env, &v)? == means_skip;
        }
        config.namespace = get(names.namespace.env);
        config.region = names.region.and_then(|region| get(region.env));
        Ok(config)
    }

    /// Applies command-line overrides; every `Some` wins over the environment.
    pub fn apply(&mut self, overrides: Overrides) -> Result<(), Error> {
        if let Some(addr) = overrides.addr {
            self.endpoint = Endpoint::parse(&addr, false)?;
        }
        if let Some(token) = overrides.token {
            self.token = Some(token);
            // An explicit token flag beats a token file inherited from the environment.
            self.token_file = None;
        }
        if let Some(file) = overrides.token_file {
            self.token_file = Some(file);
        }
        let tls = &mut self.tls;
        if let Some(v) = overrides.ca_file {
            tls.ca_file = Some(v);
        }
        if let Some(v) = overrides.ca_path {
            tls.ca_path = Some(v);
        }
        if let Some(v) = overrides.client_cert {
            tls.client_cert = Some(v);
        }
        if let Some(v) = overrides.client_key {
            tls.client_key = Some(v);
        }
        if let Some(v) = overrides.server_name {
            tls.server_name = Some(v);
        }
        if let Some(v) = overrides.skip_verify {
            tls.skip_verify = v;
        }
        if let Some(v) = overrides.namespace {
            self.namespace = Some(v);
        }
        if let Some(v) = overrides.region {
            self.region = Some(v);
        }
        if let Some(rate) = overrides.rate_limit {
            self.rate_limit = RateLimit::per_second(rate);
        }
        Ok(())
    }
}

/// Go's `strconv.ParseBool`, which the CLIs use for boolean variables.
fn parse_bool(name: &str, value: &str) -> Result<bool, Error> {
    match value.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(Error::InvalidSetting {
            name: name.to_owned(),
            value: other.to_owned(),
            expected: "a boolean",
        }),
    }
}

/// Command-line overrides of one API's settings (`None` keeps the environment's value).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Address.
    pub addr: Option<String>,
    /// Token.
    pub token: Option<Token>,
    /// Token file.
    pub token_file: Option<PathBuf>,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// CA directory.
    pub ca_path: Option<PathBuf>,
    /// Client certificate.
    pub client_cert: Option<PathBuf>,
    /// Client key.
    pub client_key: Option<PathBuf>,
    /// TLS server name.
    pub server_name: Option<String>,
    /// Skip certificate verification.
    pub skip_verify: Option<bool>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Region (Nomad).
    pub region: Option<String>,
    /// Requests per second.
    pub rate_limit: Option<NonZeroU32>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::transport::NomadFlags;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn consul_defaults_to_local_agent_over_plain_http() {
        let c = ClientConfig::consul_from_env(env(&[])).unwrap();
        assert_eq!(c.endpoint.to_string(), "http://127.0.0.1:8500");
        assert_eq!(c.token, None);
        assert_eq!(c.rate_limit.per_second.get(), 50);
    }

    #[test]
    fn consul_addr_without_scheme_uses_https_when_consul_http_ssl_is_true() {
        let c = ClientConfig::consul_from_env(env(&[
            ("CONSUL_HTTP_ADDR", "consul.service:8501"),
            ("CONSUL_HTTP_SSL", "true"),
        ]))
        .unwrap();
        assert_eq!(c.endpoint.to_string(), "https://consul.service:8501");
        let c =
            ClientConfig::consul_from_env(env(&[("CONSUL_HTTP_ADDR", "10.0.0.1:8500")])).unwrap();
        assert_eq!(c.endpoint.to_string(), "http://10.0.0.1:8500");
    }

    #[test]
    fn consul_reads_every_tls_and_token_variable() {
        let c = ClientConfig::consul_from_env(env(&[
            ("CONSUL_HTTP_ADDR", "https://c:8501"),
            ("CONSUL_HTTP_TOKEN", "s3cr3t\n"),
            ("CONSUL_HTTP_TOKEN_FILE", "/run/token"),
            ("CONSUL_CACERT", "/ca.pem"),
            ("CONSUL_CAPATH", "/cas"),
            ("CONSUL_CLIENT_CERT", "/c.pem"),
            ("CONSUL_CLIENT_KEY", "/k.pem"),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
            ("CONSUL_NAMESPACE", "team-a"),
        ]))
        .unwrap();
        assert_eq!(c.token.as_ref().map(Token::expose), Some("s3cr3t"));
        assert_eq!(c.token_file, Some(PathBuf::from("/run/token")));
        assert_eq!(c.tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.tls.ca_path, Some(PathBuf::from("/cas")));
        assert_eq!(c.tls.client_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.tls.client_key, Some(PathBuf::from("/k.pem")));
        assert_eq!(c.tls.server_name.as_deref(), Some("server.dc1.consul"));
        assert!(
            c.tls.skip_verify,
            "CONSUL_HTTP_SSL_VERIFY=false disables verification"
        );
        assert_eq!(c.namespace.as_deref(), Some("team-a"));
    }

    #[test]
    fn unix_socket_addresses_are_accepted() {
        let c = ClientConfig::consul_from_env(env(&[(
            "CONSUL_HTTP_ADDR",
            "unix:///var/run/consul.sock",
        )]))
        .unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Unix(PathBuf::from("/var/run/consul.sock"))
        );
    }

    #[test]
    fn invalid_boolean_names_the_variable() {
        let err =
            ClientConfig::nomad_from_env(env(&[("NOMAD_SKIP_VERIFY", "yes please")])).unwrap_err();
        assert!(err.to_string().contains("NOMAD_SKIP_VERIFY"), "{err}");
    }

    #[test]
    fn invalid_address_is_rejected_with_the_reason() {
        let err = ClientConfig::nomad_from_env(env(&[("NOMAD_ADDR", "ftp://x:1")])).unwrap_err();
        assert!(err.to_string().contains("scheme"), "{err}");
    }

    #[test]
    fn nomad_reads_every_variable() {
        let c = ClientConfig::nomad_from_env(env(&[
            ("NOMAD_ADDR", "https://nomad:4646"),
            ("NOMAD_TOKEN", "tok"),
            ("NOMAD_CACERT", "/ca.pem"),
            ("NOMAD_CAPATH", "/cas"),
            ("NOMAD_CLIENT_CERT", "/c.pem"),
            ("NOMAD_CLIENT_KEY", "/k.pem"),
            ("NOMAD_TLS_SERVER_NAME", "server.global.nomad"),
            ("NOMAD_SKIP_VERIFY", "1"),
            ("NOMAD_NAMESPACE", "edge"),
            ("NOMAD_REGION", "eu"),
        ]))
        .unwrap();
        assert!(c.endpoint.is_https());
        assert_eq!(c.token.as_ref().map(Token::expose), Some("tok"));
        assert_eq!(c.tls.ca_path, Some(PathBuf::from("/cas")));
        assert_eq!(c.tls.server_name.as_deref(), Some("server.global.nomad"));
        assert!(c.tls.skip_verify);
        assert_eq!(c.namespace.as_deref(), Some("edge"));
        assert_eq!(c.region.as_deref(), Some("eu"));
        assert_eq!(c.rate_limit.per_second.get(), 20);
    }

    #[test]
    fn command_line_flags_override_the_environment() {
        let mut c = ClientConfig::nomad_from_env(env(&[
            ("NOMAD_ADDR", "http://a:4646"),
            ("NOMAD_REGION", "eu"),
        ]))
        .unwrap();
        let flags = NomadFlags {
            overrides: Overrides {
                addr: Some("http://b:4646".into()),
                region: Some("us".into()),
                rate_limit: NonZeroU32::new(5),
                ..Overrides::default()
            },
            ..NomadFlags::default()
        };
        c.apply(flags.into()).unwrap();
        assert_eq!(c.endpoint.to_string(), "http://b:4646");
        assert_eq!(c.region.as_deref(), Some("us"));
        assert_eq!(c.rate_limit.per_second.get(), 5);
    }

    #[test]
    fn empty_variables_mean_unset() {
        let c = ClientConfig::consul_from_env(env(&[
            ("CONSUL_HTTP_TOKEN", ""),
            ("CONSUL_HTTP_ADDR", " "),
        ]))
        .unwrap();
        assert_eq!(c.token, None);
        assert_eq!(c.endpoint.to_string(), "http://127.0.0.1:8500");
    }

    #[test]
    fn token_debug_and_display_never_show_the_secret() {
        let t = Token::new("SENTINEL-abc");
        assert!(!format!("{t:?}").contains("SENTINEL"));
        assert!(!format!("{t}").contains("SENTINEL"));
        let c = ClientConfig {
            token: Some(t),
            ..ClientConfig::consul_default()
        };
        assert!(!format!("{c:?}").contains("SENTINEL"));
    }

    #[test]
    fn credentials_in_an_address_never_show_in_display_debug_or_parse_errors() {
        const PASS: &str = "SENTINEL-PASS-7f3a";
        let endpoint = Endpoint::parse(&format!("https://ops:{PASS}@consul:8501"), false).unwrap();
        assert_eq!(endpoint.to_string(), "https://ops:redacted@consul:8501");
        assert!(!format!("{endpoint:?}").contains(PASS));
        let lone = Endpoint::parse(&format!("http://{PASS}@consul:8500"), false).unwrap();
        assert!(!lone.to_string().contains(PASS), "{lone}");
        assert!(!format!("{lone:?}").contains(PASS));
        let mut config = ClientConfig::for_address(Api::Consul, "127.0.0.1:8500").unwrap();
        config.endpoint = endpoint;
        assert!(!format!("{config:?}").contains(PASS));
        for bad in [
            format!("ftp://ops:{PASS}@consul:21"),
            format!("http://ops:{PASS}@"),
            format!("ops:{PASS}@consul:notaport"),
        ] {
            let err = Endpoint::parse(&bad, false).unwrap_err();
            assert!(!err.to_string().contains(PASS), "{err}");
            assert!(!format!("{err:?}").contains(PASS), "{err:?}");
        }
        let from_env = ClientConfig::consul_from_env(env(&[(
            "CONSUL_HTTP_ADDR",
            &format!("http://ops:{PASS}@[::1"),
        )]))
        .unwrap_err();
        assert!(!from_env.to_string().contains(PASS), "{from_env}");
    }
}
