//! HinD tags: the whole tag is a Caddy site address (`contracts/HIND.md` §2). HinD's template
//! serves only tags matching `^https://`; `http://` tags were served as plain-HTTP sites until
//! HinD commit 1e89321 (2024-10) and are ignored since.

use super::urlprefix::{host_pattern, moved_port, path_problem, split_port};
use super::{Finding, Grammar, HttpRoute, ParsedTag, PathMatch, Route, Scheme};

pub(crate) fn is_hind(tag: &str) -> bool {
    tag.starts_with("https://") || tag.starts_with("http://")
}

/// Parses `https://host[:port][/path]` the way Caddy reads a site address.
pub(crate) fn parse(tag: &str) -> ParsedTag {
    let mut findings = Vec::new();
    let done = |route, findings| ParsedTag::new(tag, Grammar::Hind, route, findings);
    let refuse = |findings, finding| ParsedTag::refused(tag, Grammar::Hind, findings, finding);

    let (scheme, rest) = match tag.strip_prefix("https://") {
        Some(rest) => (Scheme::Https, rest),
        None => (Scheme::Http, tag.strip_prefix("http://").unwrap_or(tag)),
    };
    if scheme == Scheme::Http {
        return refuse(
            findings,
            Finding::new(
                tag,
                "http://",
                "HinD's template serves only `https://` tags (plain-HTTP sites were dropped in HinD 1e89321); not converted, so the migration exposes nothing HinD does not",
            ),
        );
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = split_port(authority);
    let moved = port.map(|p| {
        moved_port(tag, p, Some(443), &mut findings, |p| {
            format!(
                "Caddy served this site on its own TLS listener :{p}; converted onto the websecure entry point (add an entry point on :{p} if clients keep using the port)"
            )
        })
    });
    let alt_port = match moved.transpose() {
        Ok(n) => n.flatten(),
        Err(finding) => return refuse(findings, finding),
    };
    let host = match host_pattern(&host.to_lowercase(), Grammar::Hind) {
        Ok(host) => host,
        Err(why) => {
            return refuse(findings, Finding::new(tag, "host", why));
        }
    };
    // A Caddy path matcher is exact unless it ends in `*`, which makes it a prefix.
    let path = match path {
        "" | "/" | "/*" => PathMatch::Prefix("/".into()),
        p => match p.strip_suffix('*') {
            Some(prefix) => PathMatch::Prefix(prefix.to_string()),
            None => PathMatch::Exact(p.to_string()),
        },
    };
    if path.as_str().contains('*') {
        return refuse(
            findings,
            Finding::new(tag, "path", "only a trailing `*` can be converted"),
        );
    }
    if let Some(why) = path_problem(path.as_str()) {
        return refuse(findings, Finding::new(tag, "path", why));
    }
    let mut route = HttpRoute::new(host, path, scheme);
    route.alt_port = alt_port;
    done(Some(Route::Http(route)), findings)
}
