//! `spec.logging` and `spec.entryPoints.transport`: the proxy's logs and its listeners'
//! shutdown and timeouts, rendered for both proxies. With `proxy: caddy` the few log settings
//! stock Caddy cannot express are refused field by field (see `proxy/caddy/config/logging.rs`
//! for why each one); every transport setting renders for both.

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
    if proxy == ProxyKind::Caddy {
        caddy_refusals(v, l);
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

/// Headers stock Caddy writes as `REDACTED` in every access log entry.
const CADDY_REDACTS: [&str; 3] = ["Authorization", "Cookie", "Proxy-Authorization"];

/// What stock Caddy (2.11) cannot do with its logs, named by field with the reason and the fix.
fn caddy_refusals(v: &mut Validator, l: &Logging) {
    const BASE: &str = "spec.logging";
    if l.level == LogLevel::Trace {
        v.error(format!("{BASE}.level"), "Caddy has no TRACE level (its most detailed is DEBUG); set level: DEBUG or proxy: traefik");
    }
    let Some(a) = l.access_log.as_ref().filter(|a| a.enabled) else {
        return;
    };
    if a.format == LogFormat::Common {
        v.error(format!("{BASE}.accessLog.format"), "Caddy's stock build writes access logs as JSON only (the Common Log Format needs the transform-encoder plugin, module caddy.logging.encoders.transform); set format: json or proxy: traefik");
    }
    if !a.status_codes.is_empty() && !covers_only_5xx(&a.status_codes) {
        v.error(format!("{BASE}.accessLog.statusCodes"), "Caddy decides to log a request before its response exists and tells only 5xx apart (it logs them at ERROR level), so the only status filter it can express is [\"500-599\"]; use that, remove statusCodes, or set proxy: traefik");
    }
    if a.min_duration.is_some() {
        v.error(format!("{BASE}.accessLog.minDuration"), "Caddy decides to log a request before it knows how long it took, so it cannot filter by duration; remove minDuration or set proxy: traefik");
    }
    if a.headers
        && let Some(missing) = CADDY_REDACTS
            .iter()
            .find(|c| !a.redact_headers.iter().any(|h| h.eq_ignore_ascii_case(c)))
    {
        v.error(format!("{BASE}.accessLog.redactHeaders"), format!("Caddy always redacts {missing} in access logs (with Authorization, Cookie, Proxy-Authorization and Set-Cookie); keep it in redactHeaders or set proxy: traefik"));
    }
}

/// Whether valid status codes and ranges cover exactly 500 to 599.
fn covers_only_5xx(codes: &[String]) -> bool {
    let mut seen = [false; 100];
    for text in codes {
        let (from, to) = text.split_once('-').unwrap_or((text, text));
        match (from.parse::<usize>(), to.parse::<usize>()) {
            (Ok(from @ 500..=599), Ok(to @ 500..=599)) if from <= to => {
                seen[from - 500..=to - 500].fill(true);
            }
            _ => return false,
        }
    }
    seen.iter().all(|s| *s)
}

fn is_status_range(text: &str) -> bool {
    let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    match text.split_once('-') {
        Some((a, b)) => matches!((code(a), code(b)), (Some(a), Some(b)) if a <= b),
        None => code(text).is_some(),
    }
}

/// Checks `spec.entryPoints.transport`. Every field renders for both proxies.
pub(super) fn transport(v: &mut Validator, t: &Transport) -> model::Transport {
    const BASE: &str = "spec.entryPoints.transport";
    let defaults = model::Transport::default();
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use crate::spec::FieldError;

    fn caddy(logging: &str) -> Result<crate::spec::ValidatedSpec, Vec<FieldError>> {
        let doc = format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n{logging}"
        );
        crate::spec::load(doc.as_bytes()).map_err(|e| e.field_errors())
    }

    fn refused(logging: &str) -> Vec<FieldError> {
        caddy(logging).expect_err("should be refused for Caddy")
    }

    #[test]
    fn caddy_takes_every_level_but_trace_both_formats_json_access_logs_redaction_and_timeouts() {
        for level in ["DEBUG", "INFO", "WARN", "ERROR"] {
            for format in ["json", "common"] {
                let doc = format!(
                    "  logging:\n    level: {level}\n    format: {format}\n    accessLog:\n      headers: true\n      redactHeaders: [Authorization, Cookie, Proxy-Authorization, X-Api-Key]\n  entryPoints:\n    transport: {{graceTimeout: 10s, readTimeout: 5s, writeTimeout: 30s, idleTimeout: 90s}}\n"
                );
                let v = caddy(&doc).unwrap_or_else(|e| panic!("{level} {format}: {e:#?}"));
                assert_eq!(v.model().logging.level, level);
                assert_eq!(
                    v.model().transport.grace_timeout,
                    std::time::Duration::from_secs(10)
                );
            }
        }
        let v = caddy("  logging:\n    accessLog:\n      statusCodes: ['500-549', '550-599']\n")
            .unwrap();
        assert_eq!(
            v.model().logging.access_log.as_ref().unwrap().status_codes,
            ["500-549", "550-599"]
        );
    }

    #[test]
    fn caddy_refuses_trace_common_access_logs_other_status_filters_and_durations_by_field() {
        let errors = refused(
            "  logging:\n    level: TRACE\n    accessLog:\n      format: common\n      statusCodes: ['404', '500-599']\n      minDuration: 5ms\n",
        );
        for (path, why) in [
            ("spec.logging.level", "no TRACE level"),
            (
                "spec.logging.accessLog.format",
                "caddy.logging.encoders.transform",
            ),
            ("spec.logging.accessLog.statusCodes", "[\"500-599\"]"),
            ("spec.logging.accessLog.minDuration", "how long it took"),
        ] {
            let e = errors.iter().find(|e| e.path == path);
            let e = e.unwrap_or_else(|| panic!("{path} not refused: {errors:#?}"));
            assert!(e.message.contains(why), "{e}");
            assert!(e.message.contains("proxy: traefik"), "{e}");
        }
        assert_eq!(errors.len(), 4, "{errors:#?}");
        // Not exactly 500-599: a gap, a 4xx, more than 5xx.
        for codes in ["['500-598']", "['499-599']", "['500', '501']"] {
            let errors = refused(&format!(
                "  logging:\n    accessLog:\n      statusCodes: {codes}\n"
            ));
            assert_eq!(errors[0].path, "spec.logging.accessLog.statusCodes");
        }
    }

    #[test]
    fn caddy_refuses_a_redaction_list_without_the_credentials_it_always_redacts() {
        let errors = refused(
            "  logging:\n    accessLog:\n      headers: true\n      redactHeaders: [cookie, proxy-authorization]\n",
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].path, "spec.logging.accessLog.redactHeaders");
        assert!(errors[0].message.contains("Authorization"), "{}", errors[0]);
        // Without logged headers there is nothing to redact.
        caddy("  logging:\n    accessLog:\n      redactHeaders: []\n").unwrap();
    }

    #[test]
    fn a_disabled_access_log_is_never_refused_for_caddy() {
        caddy("  logging:\n    accessLog:\n      enabled: false\n      format: common\n      minDuration: 1s\n")
            .unwrap();
    }
}
