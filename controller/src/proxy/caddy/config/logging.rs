//! Pure: Caddy's logs and its servers' shutdown and timeouts, from `spec.logging` and
//! `spec.entryPoints.transport` (issue 14). Read against Caddy v2.11 source:
//!
//! - Every log goes to stdout (`caddy.logging.writers.stdout`; Caddy's default is stderr), so
//!   Nomad collects it with the task's stdout. The proxy's own log is the `default` logger:
//!   `json`, or `console` (Caddy's human-readable text) for `format: common`. Caddy's error
//!   entries (`http.log.error`) carry the request's headers; the proxy's log drops them, as
//!   Traefik's does, so request headers are logged only in the access log and only with
//!   `headers: true`, where `redactHeaders` applies.
//! - The access log is a logger of its own including `http.log.access` (the default logger
//!   excludes it, or every entry would be written twice), turned on by a `logs` object on each
//!   server (`modules/caddyhttp/server.go` `shouldLogRequest`). Its encoder is the stock
//!   `filter` around `json`: request and response headers are deleted unless `headers` is on,
//!   and then each redacted header is replaced by `REDACTED`, in both. Header names are matched
//!   in Go's canonical form, the form Caddy logs them in.
//! - Caddy decides to log a request before its response exists (`log_skip` is a request
//!   variable; `skip_hosts` is per host) and knows nothing of durations, so `minDuration` cannot
//!   be expressed. The one status Caddy tells apart is 5xx, which it logs at ERROR level and
//!   everything else at INFO (`Server.logRequest`), so `statusCodes` covering exactly 500-599
//!   is the access logger's level ERROR; every other status filter is refused.
//! - `graceTimeout` is `apps.http.grace_period`: on SIGINT (Nomad's default `kill_signal`,
//!   `sigtrap.go`), SIGTERM (`docker stop`, `sigtrap_posix.go`) or when a load replaces the
//!   servers, Caddy closes its listeners and gives open requests that long (`App.Stop`; a load
//!   does not wait for them). Caddy reads a zero grace period as "wait forever", so `0s` (Traefik: close
//!   at once) is rendered as one nanosecond. The job's `kill_timeout` is derived from the same
//!   field for both proxies (`render/nomad_job.rs`).
//! - `readTimeout`, `writeTimeout` and `idleTimeout` are the servers' Go `http.Server`
//!   timeouts; `read_header_timeout` is the read timeout too (Go's own fallback, which Caddy
//!   replaces with a 1 minute default), and with no read timeout Caddy's 1 minute stays.

use serde_json::{Map, Value, json};

use crate::render::Model;
use crate::render::model::{AccessLog, Transport};
use crate::spec::FieldError;
use crate::transport::go_duration;

/// The logger every Caddy server writes its access entries to.
const ACCESS_LOGGER: &str = "http.log.access";

/// Headers Caddy always writes as `REDACTED` unless `should_log_credentials` is set
/// (`LoggableHTTPHeader`, with `Set-Cookie`); validation makes `redactHeaders` keep them.
const CADDY_REDACTS: [&str; 3] = ["Authorization", "Cookie", "Proxy-Authorization"];

/// What the model asks of the logs that stock Caddy cannot express, field by field. Validation
/// with `proxy: caddy` refuses the same; this guards a model validated for Traefik.
pub(super) fn unsupported(model: &Model) -> Vec<FieldError> {
    let mut out = Vec::new();
    let logging = &model.logging;
    if logging.level == "TRACE" {
        out.push(FieldError::new(
            "spec.logging.level",
            "Caddy has no TRACE level (its most detailed is DEBUG); set level: DEBUG or proxy: traefik",
        ));
    }
    let Some(access) = &logging.access_log else {
        return out;
    };
    if access.format != "json" {
        out.push(FieldError::new(
            "spec.logging.accessLog.format",
            "Caddy's stock build writes access logs as JSON only (the Common Log Format needs the transform-encoder plugin, module caddy.logging.encoders.transform); set format: json or proxy: traefik",
        ));
    }
    if !access.status_codes.is_empty() && !only_server_errors(&access.status_codes) {
        out.push(FieldError::new(
            "spec.logging.accessLog.statusCodes",
            "Caddy decides to log a request before its response exists and tells only 5xx apart, so the only status filter it can express is [\"500-599\"]; use that, remove statusCodes, or set proxy: traefik",
        ));
    }
    if access.min_duration.is_some() {
        out.push(FieldError::new(
            "spec.logging.accessLog.minDuration",
            "Caddy decides to log a request before it knows how long it took, so it cannot filter by duration; remove minDuration or set proxy: traefik",
        ));
    }
    if access.headers
        && let Some(missing) = CADDY_REDACTS.iter().find(|c| {
            !access
                .redact_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(c))
        })
    {
        out.push(FieldError::new(
            "spec.logging.accessLog.redactHeaders",
            format!("Caddy always redacts {missing} (with Authorization, Cookie, Proxy-Authorization and Set-Cookie); keep it in redactHeaders or set proxy: traefik"),
        ));
    }
    out
}

/// Whether status codes and ranges cover exactly 500 to 599.
fn only_server_errors(codes: &[String]) -> bool {
    let mut seen = [false; 600];
    for text in codes {
        let (from, to) = text.split_once('-').unwrap_or((text, text));
        let (Ok(from), Ok(to)) = (from.parse::<usize>(), to.parse::<usize>()) else {
            return false;
        };
        if from < 500 || to > 599 || from > to {
            return false;
        }
        seen[from..=to].iter_mut().for_each(|s| *s = true);
    }
    seen[500..].iter().all(|s| *s)
}

/// The top-level `logging` object.
pub(super) fn logging(model: &Model) -> Value {
    let stdout = json!({"output": "stdout"});
    // Caddy's console encoder colours the level with ANSI escapes unless told otherwise.
    let format = match model.logging.format.as_str() {
        "common" => json!({"format": "console", "level_format": "upper"}),
        _ => json!({"format": "json"}),
    };
    let mut drop_headers = Map::new();
    drop_headers.insert("request>headers".into(), json!({"filter": "delete"}));
    let mut default = json!({
        "writer": stdout,
        "encoder": filter(format, drop_headers),
        "level": model.logging.level,
    });
    let mut logs = Map::new();
    if let Some(access) = &model.logging.access_log {
        default["exclude"] = json!([ACCESS_LOGGER]);
        logs.insert(
            "access".into(),
            json!({
                "writer": stdout,
                "encoder": access_encoder(access),
                "level": if access.status_codes.is_empty() { "INFO" } else { "ERROR" },
                "include": [ACCESS_LOGGER],
            }),
        );
    }
    logs.insert("default".into(), default);
    json!({"logs": logs})
}

/// `encoder` with `fields` filtered first.
fn filter(encoder: Value, fields: Map<String, Value>) -> Value {
    json!({"format": "filter", "wrap": encoder, "fields": fields})
}

fn access_encoder(access: &AccessLog) -> Value {
    let mut fields = Map::new();
    if access.headers {
        let redact = json!({"filter": "replace", "value": "REDACTED"});
        for name in &access.redact_headers {
            let name = canonical_header(name);
            fields.insert(format!("request>headers>{name}"), redact.clone());
            fields.insert(format!("resp_headers>{name}"), redact.clone());
        }
    } else {
        fields.insert("request>headers".into(), json!({"filter": "delete"}));
        fields.insert("resp_headers".into(), json!({"filter": "delete"}));
    }
    filter(json!({"format": "json"}), fields)
}

/// Go's `textproto.CanonicalMIMEHeaderKey` for a valid header name: `x-api-key` → `X-Api-Key`.
fn canonical_header(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Timeouts and the access log switch of one server (every entry point).
pub(super) fn server(model: &Model, server: &mut Value) {
    let t = &model.transport;
    let mut set = |key: &str, d: std::time::Duration| {
        if !d.is_zero() {
            server[key] = json!(go_duration(d));
        }
    };
    set("read_timeout", t.read_timeout);
    set("read_header_timeout", t.read_timeout);
    set("write_timeout", t.write_timeout);
    set("idle_timeout", t.idle_timeout);
    if model.logging.access_log.is_some() {
        server["logs"] = json!({});
    }
}

/// The drain of the HTTP app: `grace_period`.
pub(super) fn grace_period(transport: &Transport) -> Value {
    if transport.grace_timeout.is_zero() {
        json!(1)
    } else {
        json!(go_duration(transport.grace_timeout))
    }
}

#[cfg(test)]
mod tests;
