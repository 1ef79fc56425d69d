#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use serde_json::{Value, json};

use super::canonical_header;
use crate::proxy::caddy::config::tests::options;
use crate::proxy::caddy::config::{caddy_unsupported, render_config, resolve};
use crate::proxy::caddy::routes::RouteTable;
use crate::spec::ValidatedSpec;

fn spec(proxy: &str, extra: &str) -> ValidatedSpec {
    let doc = format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: {proxy}\n  entryPoints:\n    web:\n      address: \"127.0.0.1:8000\"\n      redirectTo: websecure\n    websecure:\n      address: \"127.0.0.1:8443\"\n{extra}"
    );
    crate::spec::load(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

fn render(extra: &str) -> Value {
    let model = resolve(&spec("caddy", extra), None).unwrap();
    let config = render_config(&model, &RouteTable::default(), &options()).unwrap();
    serde_json::from_slice(&config.body).unwrap()
}

#[test]
fn by_default_caddy_logs_json_at_info_to_stdout_without_access_logs_and_drains_for_30s() {
    let v = render("");
    assert_eq!(
        v["logging"],
        json!({"logs": {"default": {
            "writer": {"output": "stdout"},
            "encoder": {"format": "filter", "wrap": {"format": "json"}, "fields": {"request>headers": {"filter": "delete"}}},
            "level": "INFO"
        }}})
    );
    assert_eq!(v["apps"]["http"]["grace_period"], "30s");
    for name in ["web", "websecure"] {
        let server = &v["apps"]["http"]["servers"][name];
        assert_eq!(server["read_timeout"], "60s", "{name}");
        assert_eq!(server["read_header_timeout"], "60s", "{name}");
        assert_eq!(server["idle_timeout"], "180s", "{name}");
        // 0s is Traefik's "no write timeout", which is Caddy's when the field is absent.
        assert!(server.get("write_timeout").is_none(), "{name}");
        assert!(server.get("logs").is_none(), "{name}");
    }
}

#[test]
fn the_proxy_log_takes_the_level_and_common_is_caddys_uncoloured_console_text() {
    let v = render("  logging:\n    level: WARN\n    format: common\n");
    let default = &v["logging"]["logs"]["default"];
    assert_eq!(default["level"], "WARN");
    assert_eq!(
        default["encoder"]["wrap"],
        json!({"format": "console", "level_format": "upper"})
    );
}

#[test]
fn an_access_log_is_its_own_stdout_logger_on_every_server_and_drops_headers_by_default() {
    let v = render("  logging:\n    accessLog: {}\n");
    let logs = &v["logging"]["logs"];
    assert_eq!(logs["default"]["exclude"], json!(["http.log.access"]));
    let access = &logs["access"];
    assert_eq!(access["include"], json!(["http.log.access"]));
    assert_eq!(access["writer"], json!({"output": "stdout"}));
    assert_eq!(access["level"], "INFO");
    assert_eq!(
        access["encoder"],
        json!({"format": "filter", "wrap": {"format": "json"}, "fields": {
            "request>headers": {"filter": "delete"},
            "resp_headers": {"filter": "delete"}
        }})
    );
    // The redirecting entry point logs too, as Traefik's access log does.
    for name in ["web", "websecure"] {
        assert_eq!(
            v["apps"]["http"]["servers"][name]["logs"],
            json!({}),
            "{name}"
        );
    }
}

#[test]
fn logged_headers_are_redacted_by_their_canonical_name_in_requests_and_responses() {
    let v = render(
        "  logging:\n    accessLog:\n      headers: true\n      redactHeaders: [authorization, Cookie, PROXY-AUTHORIZATION, x-api-key]\n",
    );
    let fields = v["logging"]["logs"]["access"]["encoder"]["fields"]
        .as_object()
        .unwrap();
    assert_eq!(fields.len(), 8, "{fields:#?}");
    for name in [
        "Authorization",
        "Cookie",
        "Proxy-Authorization",
        "X-Api-Key",
    ] {
        for key in [
            format!("request>headers>{name}"),
            format!("resp_headers>{name}"),
        ] {
            assert_eq!(
                fields.get(&key),
                Some(&json!({"filter": "replace", "value": "REDACTED"})),
                "{key}"
            );
        }
    }
    assert_eq!(canonical_header("x-API-key"), "X-Api-Key");
    assert_eq!(canonical_header("WWW-authenticate"), "Www-Authenticate");
}

#[test]
fn a_5xx_status_filter_is_the_access_logger_level_error() {
    let v = render("  logging:\n    accessLog:\n      statusCodes: ['500-599']\n");
    assert_eq!(v["logging"]["logs"]["access"]["level"], "ERROR");
}

#[test]
fn timeouts_render_on_every_server_and_a_zero_drain_is_one_nanosecond_not_forever() {
    let v = render(
        "    transport: {graceTimeout: 0s, readTimeout: 0s, writeTimeout: 90s, idleTimeout: 1500ms}\n",
    );
    assert_eq!(v["apps"]["http"]["grace_period"], 1);
    for name in ["web", "websecure"] {
        let server = &v["apps"]["http"]["servers"][name];
        assert!(server.get("read_timeout").is_none(), "{name}");
        assert!(server.get("read_header_timeout").is_none(), "{name}");
        assert_eq!(server["write_timeout"], "90s", "{name}");
        assert_eq!(server["idle_timeout"], "1500ms", "{name}");
    }
}

#[test]
fn a_traefik_model_caddy_cannot_log_is_refused_by_field_never_rendered_without_it() {
    let s = spec(
        "traefik",
        "  logging:\n    level: TRACE\n    accessLog:\n      format: common\n      statusCodes: ['404']\n      minDuration: 10ms\n      headers: false\n",
    );
    let paths: Vec<String> = caddy_unsupported(&s).into_iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        [
            "spec.logging.level",
            "spec.logging.accessLog.format",
            "spec.logging.accessLog.statusCodes",
            "spec.logging.accessLog.minDuration",
        ]
    );
    let model = resolve(&s, None).unwrap();
    let err = render_config(&model, &RouteTable::default(), &options())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.logging.level") && err.contains("DEBUG"),
        "{err}"
    );

    let s = spec(
        "traefik",
        "  logging:\n    accessLog:\n      headers: true\n      redactHeaders: [Cookie]\n",
    );
    let errors = caddy_unsupported(&s);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "spec.logging.accessLog.redactHeaders");
    assert!(caddy_unsupported(&spec("traefik", "  logging:\n    accessLog: {}\n")).is_empty());
}
