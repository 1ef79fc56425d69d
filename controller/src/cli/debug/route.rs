//! `debug route HOST [PATH]`: Traefik's routers from `/api/rawdata`, matched against a host and
//! path the way Traefik does (highest priority wins; the default priority is the rule's
//! length), or Caddy's routes from its loaded config (`--caddy-admin`, first match in order),
//! then one request through the entry point.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

const EXIT_HELP: &str = "Exit codes: 0 a router matches and the request got an answer, \
1 no router matches or the request failed, 2 usage or IO error (the proxy API unreachable).";

/// Arguments of `debug route`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_HELP)]
pub struct Args {
    /// The Host the request carries.
    host: String,
    /// The request path.
    #[arg(default_value = "/")]
    path: String,
    /// Base URL of Traefik's API (the document's dashboard address).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    proxy_api: String,
    /// The Traefik entry point the request arrives on (default: the one whose address has the
    /// port of --entry-point, from `/api/entrypoints`); only its routers are matched.
    #[arg(long, value_name = "NAME")]
    entry_point_name: Option<String>,
    /// Base URL of Caddy's admin API: match Caddy's loaded config instead of Traefik's routers.
    #[arg(long, value_name = "URL")]
    caddy_admin: Option<String>,
    /// Base URL of the entry point the request goes through.
    #[arg(long, default_value = "http://127.0.0.1:80")]
    entry_point: String,
}

/// Three-valued: a matcher this command does not evaluate (HostRegexp, Header, ...) is
/// "unknown", so a router is never claimed to match, or not, on a guess.
type Tri = Option<bool>;

struct Parser<'a> {
    rest: &'a str,
    host: &'a str,
    path: &'a str,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if let Some(r) = self.rest.strip_prefix(token) {
            self.rest = r;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Tri, String> {
        let mut value = self.term()?;
        while self.eat("||") {
            let rhs = self.term()?;
            value = match (value, rhs) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            };
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<Tri, String> {
        let mut value = self.factor()?;
        while self.eat("&&") {
            let rhs = self.factor()?;
            value = match (value, rhs) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
        }
        Ok(value)
    }

    fn factor(&mut self) -> Result<Tri, String> {
        if self.eat("!") {
            return Ok(self.factor()?.map(|v| !v));
        }
        if self.eat("(") {
            let v = self.expr()?;
            if !self.eat(")") {
                return Err("missing )".into());
            }
            return Ok(v);
        }
        self.skip_ws();
        let name_len = self
            .rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(self.rest.len());
        let name = &self.rest[..name_len];
        self.rest = &self.rest[name_len..];
        if name.is_empty() || !self.eat("(") {
            return Err(format!("expected a matcher at {:?}", self.rest));
        }
        let mut args = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(")") {
                break;
            }
            let quote = self.rest.chars().next().ok_or("unterminated matcher")?;
            if quote != '`' && quote != '"' {
                return Err(format!("expected a quoted value at {:?}", self.rest));
            }
            let body = &self.rest[1..];
            let end = body.find(quote).ok_or("unterminated value")?;
            args.push(body[..end].to_owned());
            self.rest = &body[end + 1..];
            let _ = self.eat(",");
        }
        Ok(self.matcher(name, &args))
    }

    fn matcher(&self, name: &str, args: &[String]) -> Tri {
        let host = self.host.split(':').next().unwrap_or_default();
        match name {
            "Host" => Some(args.iter().any(|a| a.eq_ignore_ascii_case(host))),
            "Path" => Some(args.iter().any(|a| a == self.path)),
            "PathPrefix" => Some(args.iter().any(|a| self.path.starts_with(a.as_str()))),
            _ => None,
        }
    }
}

/// Whether a Traefik rule matches a host and path (`None`: it uses matchers not evaluated here).
fn rule_matches(rule: &str, host: &str, path: &str) -> Result<Tri, String> {
    let mut p = Parser {
        rest: rule,
        host,
        path,
    };
    let v = p.expr()?;
    p.skip_ws();
    if !p.rest.is_empty() {
        return Err(format!("unexpected {:?}", p.rest));
    }
    Ok(v)
}

/// One router of `/api/rawdata` that matches (or might).
#[derive(Debug)]
struct Candidate {
    name: String,
    rule: String,
    priority: i64,
    certain: bool,
    router: Value,
}

/// Names of Traefik entry points (from `/api/entrypoints`) listening on `port`.
fn entry_points_on(entrypoints: &Value, port: u16) -> Vec<String> {
    entrypoints
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e.get("address")
                .and_then(Value::as_str)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse::<u16>().ok())
                == Some(port)
        })
        .filter_map(|e| e.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Routers whose rule matches (or might), highest priority first; with `entry_points`, only
/// routers on one of them.
fn candidates(
    rawdata: &Value,
    host: &str,
    path: &str,
    entry_points: Option<&[String]>,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = rawdata
        .get("routers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, router)| {
            if let Some(wanted) = entry_points {
                let on: Vec<&str> = router
                    .get("entryPoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if !on.is_empty() && !wanted.iter().any(|w| on.contains(&w.as_str())) {
                    return None;
                }
            }
            let rule = router.get("rule")?.as_str()?.to_owned();
            let verdict = rule_matches(&rule, host, path).ok()?;
            if verdict == Some(false) {
                return None;
            }
            let priority = router
                .get("priority")
                .and_then(Value::as_i64)
                .filter(|p| *p != 0)
                .unwrap_or_else(|| i64::try_from(rule.len()).unwrap_or(i64::MAX));
            Some(Candidate {
                name: name.clone(),
                rule,
                priority,
                certain: verdict == Some(true),
                router: router.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    out
}

/// Caddy's `host` matcher: exact (case-insensitive) or a `*.` wildcard for one label.
fn caddy_host(pattern: &str, host: &str) -> bool {
    let host = host.split(':').next().unwrap_or_default();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Caddy's `path` matcher: exact, or `*` at the start and/or end.
fn caddy_path(pattern: &str, path: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(p), _) if p.ends_with('*') => path.contains(&p[..p.len() - 1]),
        (Some(p), _) => path.ends_with(p),
        (None, Some(p)) => path.starts_with(p),
        (None, None) => pattern == path,
    }
}

/// Whether a route's `match` list matches (any set; all matchers of a set). Matchers other than
/// `host` and `path` make the answer unknown.
fn caddy_route_matches(route: &Value, host: &str, path: &str) -> Tri {
    let Some(sets) = route.get("match").and_then(Value::as_array) else {
        return Some(true); // no matcher: matches everything
    };
    let mut any_unknown = false;
    for set in sets.iter().filter_map(Value::as_object) {
        let mut verdict = Some(true);
        for (name, arg) in set {
            let patterns: Vec<&str> = arg
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let m = match name.as_str() {
                "host" => Some(patterns.iter().any(|p| caddy_host(p, host))),
                "path" => Some(patterns.iter().any(|p| caddy_path(p, path))),
                _ => None,
            };
            verdict = match (verdict, m) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
        }
        match verdict {
            Some(true) => return Some(true),
            None => any_unknown = true,
            Some(false) => {}
        }
    }
    if any_unknown { None } else { Some(false) }
}

/// The handlers of a route, nested subroutes flattened: `reverse_proxy → 127.0.0.1:8081`.
fn caddy_handlers(route: &Value, out: &mut Vec<String>) {
    for h in route
        .get("handle")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = h.get("handler").and_then(Value::as_str).unwrap_or("?");
        match name {
            "subroute" => {
                for r in h
                    .get("routes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    caddy_handlers(r, out);
                }
            }
            "reverse_proxy" => {
                let dials: Vec<&str> = h
                    .pointer("/upstreams")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.get("dial").and_then(Value::as_str))
                    .collect();
                out.push(format!("reverse_proxy → {}", dials.join(", ")));
            }
            other => out.push(other.to_owned()),
        }
    }
}

/// The first route of each Caddy server that matches: `(server, index, route, certain)`.
fn caddy_matches(config: &Value, host: &str, path: &str) -> Vec<(String, usize, Value, bool)> {
    config
        .pointer("/apps/http/servers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(server, s)| {
            s.get("routes")
                .and_then(Value::as_array)?
                .iter()
                .enumerate()
                .find_map(|(i, r)| match caddy_route_matches(r, host, path) {
                    Some(false) => None,
                    v => Some((server.clone(), i, r.clone(), v == Some(true))),
                })
        })
        .collect()
}

fn list(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

async fn fetch_json(http: &reqwest::Client, url: &str, flag: &str) -> anyhow::Result<Value> {
    http.get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("failed to read {url} (is {flag} the right address?)"))?
        .json()
        .await
        .with_context(|| format!("failed to decode {url}"))
}

/// Runs `debug route`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .context("failed to build the HTTP client")?;
    let mut out = String::new();
    let mut ok = true;
    if let Some(admin) = &args.caddy_admin {
        let url = format!("{}/config/", admin.trim_end_matches('/'));
        let config: Value = fetch_json(&http, &url, "--caddy-admin").await?;
        let found = caddy_matches(&config, &args.host, &args.path);
        if found.is_empty() {
            let _ = writeln!(
                out,
                "No Caddy route matches Host {} and path {}.",
                args.host, args.path
            );
            ok = false;
        }
        for (server, index, route, certain) in found {
            let verdict = if certain {
                "serves it"
            } else {
                "may serve it (matchers not evaluated here)"
            };
            let _ = writeln!(out, "Caddy server {server}, route {index} {verdict}:");
            let matchers = route
                .get("match")
                .map_or_else(|| "(all requests)".to_owned(), ToString::to_string);
            let _ = writeln!(out, "  match:    {matchers}");
            let mut handlers = Vec::new();
            caddy_handlers(&route, &mut handlers);
            let _ = writeln!(out, "  handlers: {}", handlers.join(" | "));
        }
    } else {
        let url = format!("{}/api/rawdata", args.proxy_api.trim_end_matches('/'));
        let rawdata: Value = fetch_json(&http, &url, "--proxy-api").await?;
        let entry_points = match &args.entry_point_name {
            Some(name) => Some(vec![name.clone()]),
            None => {
                let port = url::Url::parse(&args.entry_point)
                    .ok()
                    .and_then(|u| u.port_or_known_default());
                let url = format!("{}/api/entrypoints", args.proxy_api.trim_end_matches('/'));
                match (port, fetch_json(&http, &url, "--proxy-api").await) {
                    (Some(port), Ok(eps)) => {
                        Some(entry_points_on(&eps, port)).filter(|v| !v.is_empty())
                    }
                    _ => None,
                }
            }
        };
        if let Some(eps) = &entry_points {
            let _ = writeln!(out, "Entry point: {}", eps.join(", "));
        }
        let found = candidates(&rawdata, &args.host, &args.path, entry_points.as_deref());
        match found.first() {
            Some(best) => {
                let verdict = if best.certain {
                    "serves it"
                } else {
                    "may serve it (rule has matchers not evaluated here)"
                };
                let _ = writeln!(out, "Router {} {verdict}:", best.name);
                let _ = writeln!(out, "  rule:        {}", best.rule);
                let _ = writeln!(out, "  priority:    {}", best.priority);
                let _ = writeln!(
                    out,
                    "  entryPoints: {}",
                    list(best.router.get("entryPoints"))
                );
                let _ = writeln!(
                    out,
                    "  middlewares: {}",
                    list(best.router.get("middlewares"))
                );
                let service = best
                    .router
                    .get("service")
                    .and_then(Value::as_str)
                    .unwrap_or("-");
                let _ = writeln!(out, "  service:     {service}");
                let status = best
                    .router
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("-");
                let _ = writeln!(out, "  status:      {status}");
                for other in found.iter().skip(1) {
                    let _ = writeln!(
                        out,
                        "  also matches (lower priority {}): {}",
                        other.priority, other.name
                    );
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "No router matches Host {} and path {}.",
                    args.host, args.path
                );
                ok = false;
            }
        }
    }
    let target = format!("{}{}", args.entry_point.trim_end_matches('/'), args.path);
    let started = Instant::now();
    match http
        .get(&target)
        .header(reqwest::header::HOST, &args.host)
        .send()
        .await
    {
        Ok(resp) => {
            let took = started.elapsed();
            let _ = writeln!(
                out,
                "\nGET {target} (Host: {}): {} in {} ms",
                args.host,
                resp.status(),
                took.as_millis()
            );
            for (name, value) in resp.headers() {
                let shown = if name == reqwest::header::SET_COOKIE {
                    "<redacted>"
                } else {
                    value.to_str().unwrap_or("<binary>")
                };
                let _ = writeln!(out, "  {name}: {shown}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "\nGET {target} (Host: {}) failed: {e}", args.host);
            ok = false;
        }
    }
    super::super::validate::write_quietly(std::io::stdout().lock(), &out)
        .context("failed to write to stdout")?;
    Ok(ExitCode::from(u8::from(!ok)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_host_and_path_like_traefik_and_unknown_matchers_stay_unknown() {
        let m = |r: &str, h: &str, p: &str| rule_matches(r, h, p).ok().flatten();
        assert_eq!(
            m("Host(`demo.localhost`)", "demo.localhost:8080", "/"),
            Some(true)
        );
        assert_eq!(
            m("Host(`a`, `b`) && PathPrefix(`/api`)", "b", "/api/x"),
            Some(true)
        );
        assert_eq!(
            m("Host(`a`) && PathPrefix(`/api`)", "a", "/web"),
            Some(false)
        );
        assert_eq!(m("Host(`a`) || Host(`b`)", "c", "/"), Some(false));
        assert_eq!(m("!Host(`a`)", "c", "/"), Some(true));
        assert_eq!(m("Host(`a`) && HostRegexp(`.+`)", "a", "/"), None);
        assert_eq!(m("Host(`a`) && HostRegexp(`.+`)", "b", "/"), Some(false));
        assert!(rule_matches("Host(`a`", "a", "/").is_err());
    }

    #[test]
    fn caddy_routes_match_host_wildcards_and_path_globs_in_order() {
        let config = serde_json::json!({"apps": {"http": {"servers": {"srv0": {"routes": [
            {"match": [{"host": ["api.example.com"], "path": ["/v1/*"]}],
             "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "10.0.0.1:80"}]}]},
            {"match": [{"host": ["*.example.com"]}],
             "handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "headers"},
                 {"handler": "reverse_proxy", "upstreams": [{"dial": "10.0.0.2:80"}]}]}]}]},
        ]}}}}});
        let first = caddy_matches(&config, "api.example.com", "/v1/users");
        assert_eq!(first[0].1, 0);
        let second = caddy_matches(&config, "www.example.com", "/");
        assert_eq!(second[0].1, 1);
        let mut handlers = Vec::new();
        caddy_handlers(&second[0].2, &mut handlers);
        assert_eq!(handlers, ["headers", "reverse_proxy → 10.0.0.2:80"]);
        assert!(caddy_matches(&config, "example.org", "/").is_empty());
        assert!(caddy_path("*.css", "/a/b.css") && !caddy_path("/v1/*", "/v2/x"));
    }

    #[test]
    fn the_longest_rule_wins_unless_a_priority_is_set_and_only_routers_of_the_entry_point_count() {
        let raw = serde_json::json!({"routers": {
            "short@consul": {"rule": "Host(`a`)", "service": "s1"},
            "long@consul": {"rule": "Host(`a`) && PathPrefix(`/api`)", "service": "s2"},
            "other@consul": {"rule": "Host(`b`)", "service": "s3"},
        }});
        let c = candidates(&raw, "a", "/api/v1", None);
        assert_eq!(
            c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["long@consul", "short@consul"]
        );
        let raw = serde_json::json!({"routers": {
            "short@consul": {"rule": "Host(`a`)", "priority": 1000},
            "long@consul": {"rule": "Host(`a`) && PathPrefix(`/api`)"},
        }});
        assert_eq!(candidates(&raw, "a", "/api", None)[0].name, "short@consul");
        let raw = serde_json::json!({"routers": {
            "api@internal": {"rule": "PathPrefix(`/api`)", "entryPoints": ["traefik"], "priority": 99999},
            "demo@file": {"rule": "Host(`a`)", "entryPoints": ["web"]},
        }});
        let web = ["web".to_owned()];
        assert_eq!(
            candidates(&raw, "a", "/api", Some(&web))[0].name,
            "demo@file"
        );
        let eps = serde_json::json!([{"name": "web", "address": "127.0.0.1:8081/tcp"}, {"name": "traefik", "address": ":8080"}]);
        assert_eq!(entry_points_on(&eps, 8081), ["web"]);
        assert_eq!(entry_points_on(&eps, 8080), ["traefik"]);
    }
}
