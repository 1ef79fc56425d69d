//! `spec.logging` and `spec.entryPoints.transport`: the proxy's logs and its listeners'
//! shutdown and timeouts. Both are rendered for Traefik; Caddy's renderer does not express them
//! yet, so anything but the defaults is refused with `proxy: caddy`.

use std::time::Duration;

use super::field::{Validator, is_header_name};
use crate::spec::model;
use crate::spec::{LogFormat, LogLevel, Logging, ProxyKind, Transport};

fn format_name(f: LogFormat) -> &'static str {
    match f {
        LogFormat::Json => "json",
        LogFormat::Common => "common",
    }
}

/// Checks `spec.logging`.
pub(super) fn check(v: &mut Validator, l: &Logging, proxy: ProxyKind) -> model::Logging {
    if proxy == ProxyKind::Caddy && *l != Logging::default() {
        v.error("spec.logging", "logging settings are not supported with proxy: caddy yet (the Caddy renderer cannot express them); remove spec.logging or set proxy: traefik");
    }
    let access_log = l.access_log.as_ref().filter(|a| a.enabled).map(|a| {
        for (i, code) in a.status_codes.iter().enumerate() {
            if !is_status_range(code) {
                v.error(format!("spec.logging.accessLog.statusCodes[{i}]"), format!("{code:?} is not a status code or range between 100 and 599 (e.g. \"404\" or \"500-599\")"));
            }
        }
        for (i, name) in a.redact_headers.iter().enumerate() {
            if !is_header_name(name) {
                v.error(format!("spec.logging.accessLog.redactHeaders[{i}]"), format!("{name:?} is not an HTTP header name"));
            }
        }
        if a.headers && a.format == LogFormat::Common {
            v.error("spec.logging.accessLog.headers", "headers are only logged in the json format; set format: json or headers: false");
        }
        model::AccessLog {
            format: format_name(a.format).to_string(),
            status_codes: a.status_codes.clone(),
            min_duration: a
                .min_duration
                .as_ref()
                .and_then(|d| v.duration("spec.logging.accessLog.minDuration", d)),
            headers: a.headers,
            redact_headers: a.redact_headers.clone(),
        }
    });
    model::Logging {
        level: match l.level {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
        .to_string(),
        format: format_name(l.format).to_string(),
        access_log,
    }
}

fn is_status_range(text: &str) -> bool {
    let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    match text.split_once('-') {
        Some((a, b)) => matches!((code(a), code(b)), (Some(a), Some(b)) if a <= b),
        None => code(text).is_some(),
    }
}

/// Checks `spec.entryPoints.transport`.
pub(super) fn transport(v: &mut Validator, t: &Transport, proxy: ProxyKind) -> model::Transport {
    const BASE: &str = "spec.entryPoints.transport";
    let defaults = model::Transport::default();
    if proxy == ProxyKind::Caddy && *t != Transport::default() {
        v.error(BASE, "entry point timeouts are not supported with proxy: caddy yet (the Caddy renderer cannot express them); remove spec.entryPoints.transport or set proxy: traefik");
    }
    let mut d = |field: &str, text: &str, default: Duration| {
        v.duration(&format!("{BASE}.{field}"), text)
            .unwrap_or(default)
    };
    let out = model::Transport {
        grace_timeout: d("graceTimeout", &t.grace_timeout, defaults.grace_timeout),
        read_timeout: d("readTimeout", &t.read_timeout, defaults.read_timeout),
        write_timeout: d("writeTimeout", &t.write_timeout, defaults.write_timeout),
        idle_timeout: d("idleTimeout", &t.idle_timeout, defaults.idle_timeout),
    };
    // A longer drain would keep a proxy switch or a rollback waiting for minutes.
    if out.grace_timeout > Duration::from_secs(600) {
        v.error(
            format!("{BASE}.graceTimeout"),
            "must be at most 10m; a longer drain keeps a proxy switch waiting too long",
        );
    }
    if out.idle_timeout.is_zero() {
        v.error(
            format!("{BASE}.idleTimeout"),
            "must be longer than zero (idle connections would never close)",
        );
    }
    out
}
