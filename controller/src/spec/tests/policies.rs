//! Validation of the issue-14 policies: the newer middlewares, policy sets, logging and the
//! entry points' transport; what Caddy refuses; what no stock build has.

#![allow(clippy::unwrap_used)] // tests fail loudly

use super::*;

fn caddy(extra: &str) -> String {
    format!("{MINIMAL}spec:\n  proxy: caddy\n{extra}")
}

const EVERY_NEW_MIDDLEWARE: &str = "  middlewares:
    forwardAuth: {address: 'http://auth.test:4180/verify'}
    circuitBreaker: {expression: 'NetworkErrorRatio() > 0.5'}
    retry: {attempts: 2}
    buffering: {maxRequestBodyBytes: 1000}
    compress: {}
    requiredHeaders: [X-Api-Key]
    ipDenyList: {sourceRange: [203.0.113.0/24]}
";

#[test]
fn every_new_middleware_is_valid_for_traefik() {
    let v = valid(&traefik(EVERY_NEW_MIDDLEWARE));
    let p = &v.model().policy;
    assert!(p.forward_auth.is_some() && p.circuit_breaker.is_some() && p.retry.is_some());
    assert_eq!(
        p.compress.as_ref().map(|c| c.min_response_body_bytes),
        Some(1024)
    );
    assert_eq!(p.required_headers, ["X-Api-Key"]);
    assert_eq!(p.ip_deny.len(), 1);
    let cb = p.circuit_breaker.as_ref().unwrap();
    assert_eq!(cb.check_period, std::time::Duration::from_millis(100));
    assert_eq!(cb.fallback_duration, std::time::Duration::from_secs(10));
}

#[test]
fn caddy_takes_every_new_middleware_it_renders_and_refuses_the_circuit_breaker_by_name() {
    let errors = field_errors(&caddy(EVERY_NEW_MIDDLEWARE));
    assert!(
        has_error(
            &errors,
            "spec.middlewares.circuitBreaker",
            "circuit_breakers"
        ),
        "{errors:#?}"
    );
    assert_eq!(errors.len(), 1, "only the breaker is refused: {errors:#?}");
}

#[test]
fn caddy_refuses_a_response_body_limit_and_a_trusted_forward_header_but_takes_a_set_s_basic_auth() {
    let doc = caddy(
        "  middlewares:
    forwardAuth: {address: 'http://auth.test/verify', trustForwardHeader: true}
    buffering: {maxRequestBodyBytes: 10, maxResponseBodyBytes: 10}
  policies:
    admin:
      basicAuth: {usersFrom: {file: /etc/admin.htpasswd}}
      compress: {}
",
    );
    let errors = field_errors(&doc);
    for (path, why) in [
        (
            "spec.middlewares.forwardAuth.trustForwardHeader",
            "trusted_proxies",
        ),
        (
            "spec.middlewares.buffering.maxResponseBodyBytes",
            "request bodies only",
        ),
    ] {
        assert!(has_error(&errors, path, why), "{path}: {errors:#?}");
        assert!(
            has_error(&errors, path, "proxy: caddy"),
            "{path}: {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn a_set_s_basic_auth_on_caddy_takes_users_from_a_consul_key_or_a_file_the_operator_reads() {
    let v = valid(&caddy(
        "  policies:
    admin:
      basicAuth: {usersFrom: {consulKey: proxy-operator/secrets/admin}, realm: admin}
    ops:
      basicAuth: {usersFrom: {file: /etc/ops.htpasswd}}
",
    ));
    for set in ["admin", "ops"] {
        let auth = v.model().policies[set].basic_auth.as_ref().unwrap();
        assert_eq!(auth.users_file, None, "{set}: Caddy cannot read a file");
        assert!(
            auth.users.is_empty(),
            "{set}: users come from the reference"
        );
    }
    assert_eq!(
        v.model().policies["admin"]
            .basic_auth
            .as_ref()
            .unwrap()
            .realm,
        "admin"
    );
}

#[test]
fn a_set_s_users_reference_must_be_a_kv_key_or_an_absolute_path_named_with_its_field() {
    for proxy in ["traefik", "caddy"] {
        let doc = |from: &str| {
            format!(
                "{MINIMAL}spec:\n  proxy: {proxy}\n  policies:\n    admin:\n      basicAuth: {{usersFrom: {from}}}\n"
            )
        };
        assert_error(
            &doc("{consulKey: /leading}"),
            "spec.policies.admin.basicAuth.usersFrom.consulKey",
            "e.g. proxy-operator/secrets/basic-auth",
        );
        assert_error(
            &doc("{consulKey: ''}"),
            "spec.policies.admin.basicAuth.usersFrom.consulKey",
            "not a Consul KV key",
        );
        assert_error(
            &doc("{file: htpasswd}"),
            "spec.policies.admin.basicAuth.usersFrom.file",
            "absolute path",
        );
    }
}

#[test]
fn policy_sets_logging_and_timeouts_are_accepted_for_caddy() {
    let doc = caddy(
        "  policies:\n    admin:\n      compress: {}\n  logging:\n    level: DEBUG\n  entryPoints:\n    transport:\n      graceTimeout: 10s\n",
    );
    // Caddy renders all three (proxy/caddy/policy.rs, proxy/caddy/config/logging.rs).
    valid(&doc);
}

#[test]
fn geo_blocking_and_a_waf_are_refused_because_no_stock_build_has_the_plugin() {
    let doc = traefik("  middlewares:\n    geoBlock: {countries: [XX]}\n    waf: {rules: owasp}\n");
    assert_error(&doc, "spec.middlewares.geoBlock", "plugin");
    assert_error(&doc, "spec.middlewares.waf", "plugin");
    assert_error(&doc, "spec.middlewares.geoBlock", "ipDenyList");
}

#[test]
fn a_circuit_breaker_expression_with_a_typo_is_refused_before_traefik_disables_routers() {
    for bad in [
        "ResponseCodeRatio(500, 600, 0, 600 > 0.5",
        "NetworkErrorRate() > 0.5",
        "0.5 > 0.1",
        "NetworkErrorRatio > 0.5",
        "",
    ] {
        let doc = traefik(&format!(
            "  middlewares:\n    circuitBreaker: {{expression: '{bad}'}}\n"
        ));
        assert_error(&doc, "spec.middlewares.circuitBreaker.expression", "e.g.");
    }
    valid(&traefik(
        "  middlewares:\n    circuitBreaker: {expression: 'LatencyAtQuantileMS(50.0) > 100 && ResponseCodeRatio(500, 600, 0, 600) >= 0.25'}\n",
    ));
}

#[test]
fn forward_auth_needs_an_http_url_without_credentials_and_tls_only_with_https() {
    let secret = "hunter2-sentinel";
    let doc = traefik(&format!(
        "  middlewares:\n    forwardAuth: {{address: 'https://svc:{secret}@auth.test/verify'}}\n"
    ));
    let errors = field_errors(&doc);
    assert!(has_error(
        &errors,
        "spec.middlewares.forwardAuth.address",
        "credentials"
    ));
    assert!(
        errors.iter().all(|e| !e.to_string().contains(secret)),
        "the secret is never echoed: {errors:#?}"
    );
    assert_error(
        &traefik("  middlewares:\n    forwardAuth: {address: 'auth.test:4180'}\n"),
        "spec.middlewares.forwardAuth.address",
        "http(s) URL",
    );
    assert_error(
        &traefik(
            "  middlewares:\n    forwardAuth: {address: 'http://auth.test/v', tls: {caFile: /ca.pem}}\n",
        ),
        "spec.middlewares.forwardAuth.tls",
        "https://",
    );
    assert_error(
        &traefik(
            "  middlewares:\n    forwardAuth: {address: 'https://auth.test/v', tls: {certFile: /c.pem}}\n",
        ),
        "spec.middlewares.forwardAuth.tls",
        "both",
    );
}

#[test]
fn policy_sets_need_a_free_name_and_some_middleware_and_take_users_from_a_key_or_a_file() {
    assert_error(
        &traefik("  policies:\n    proxy-operator-x:\n      compress: {}\n"),
        "spec.policies.proxy-operator-x",
        "pick another name",
    );
    assert_error(
        &traefik("  policies:\n    Admin:\n      compress: {}\n"),
        "spec.policies.Admin",
        "lowercase",
    );
    assert_error(
        &traefik("  policies:\n    empty: {}\n"),
        "spec.policies.empty",
        "no middleware",
    );
    let v = valid(&traefik(
        "  policies:\n    admin:\n      basicAuth: {usersFrom: {consulKey: a/b}}\n",
    ));
    let auth = v.model().policies["admin"].basic_auth.as_ref().unwrap();
    assert_eq!(auth.users_file, None, "the operator reads the key");
    let v = valid(&traefik(
        "  policies:\n    admin:\n      basicAuth: {usersFrom: {file: /etc/admin.htpasswd}, realm: admin}\n",
    ));
    let auth = v.model().policies["admin"].basic_auth.as_ref().unwrap();
    assert_eq!(auth.users_file.as_deref(), Some("/etc/admin.htpasswd"));
}

#[test]
fn required_headers_and_deny_lists_are_entry_point_only_so_a_policy_set_cannot_hold_them() {
    let errors = field_errors(&traefik(
        "  policies:\n    admin:\n      requiredHeaders: [X-A]\n",
    ));
    assert!(
        errors.iter().any(|e| e.message.contains("requiredHeaders")),
        "{errors:#?}"
    );
}

#[test]
fn access_log_filters_must_be_status_codes_or_ranges() {
    for bad in ["99", "600", "500-400", "5xx"] {
        assert_error(
            &traefik(&format!(
                "  logging:\n    accessLog:\n      statusCodes: ['{bad}']\n"
            )),
            "spec.logging.accessLog.statusCodes[0]",
            "status code",
        );
    }
    let v = valid(&traefik(
        "  logging:\n    level: WARN\n    format: common\n    accessLog:\n      statusCodes: ['404', '500-599']\n      minDuration: 5ms\n",
    ));
    let log = &v.model().logging;
    assert_eq!(
        (log.level.as_str(), log.format.as_str()),
        ("WARN", "common")
    );
    let access = log.access_log.as_ref().unwrap();
    assert_eq!(access.status_codes, ["404", "500-599"]);
    assert_eq!(
        access.min_duration,
        Some(std::time::Duration::from_millis(5))
    );
}

#[test]
fn the_rendered_kill_timeout_outlasts_the_entry_points_drain() {
    let doc = traefik("  entryPoints:\n    transport:\n      graceTimeout: 45s\n");
    let v = valid(&doc);
    let r = crate::render::render(&v, &crate::render::RenderContext::default()).unwrap();
    let kill = r.job["TaskGroups"][0]["Tasks"][0]["KillTimeout"]
        .as_i64()
        .unwrap();
    assert_eq!(kill, 50_000_000_000, "graceTimeout + 5s, in nanoseconds");
    let yaml: serde_json::Value =
        serde_saphyr::from_str(r.traefik_static.as_deref().unwrap()).unwrap();
    assert_eq!(
        yaml["entryPoints"]["websecure"]["transport"]["lifeCycle"]["graceTimeOut"],
        "45s"
    );
    // The default drain is the design's 30 s.
    let r = crate::render::render(&valid(&traefik("")), &Default::default()).unwrap();
    assert_eq!(
        r.job["TaskGroups"][0]["Tasks"][0]["KillTimeout"],
        35_000_000_000_i64
    );
    assert_error(
        &traefik("  entryPoints:\n    transport:\n      graceTimeout: 11m\n"),
        "spec.entryPoints.transport.graceTimeout",
        "at most",
    );
}

#[test]
fn docker_proxies_get_the_open_file_limit_and_command_drivers_inherit_the_clients() {
    let r = crate::render::render(&valid(&traefik("")), &Default::default()).unwrap();
    assert_eq!(
        r.job["TaskGroups"][0]["Tasks"][0]["Config"]["ulimit"],
        serde_json::json!([{"nofile": "65535:65535"}])
    );
    let raw = traefik("  job:\n    driver:\n      rawExec: {command: /usr/bin/traefik}\n");
    let r = crate::render::render(&valid(&raw), &Default::default()).unwrap();
    assert!(
        r.job["TaskGroups"][0]["Tasks"][0]["Config"]
            .get("ulimit")
            .is_none()
    );
    assert_error(
        &traefik("  job:\n    openFiles: 100\n"),
        "spec.job.openFiles",
        "at least 1024",
    );
}

#[test]
fn inline_users_in_a_policy_set_are_refused_without_echoing_them() {
    let doc = traefik(
        "  policies:\n    admin:\n      basicAuth:\n        users: [\"admin:$apr1$s3nt1nelHash\"]\n        usersFrom: {file: /etc/htpasswd}\n",
    );
    let errors = parse_err(&doc).field_errors();
    assert!(
        has_error(&errors, "spec.policies.admin.basicAuth.users", "usersFrom"),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| !e.to_string().contains("s3nt1nelHash")),
        "{errors:?}"
    );
}
