//! Unit tests of parse + validate: one per rule, named for the behaviour a user relies on.
// Tests fail by panicking; the workspace lint is for production code.
#![allow(clippy::panic)]

use super::*;

const MINIMAL: &str = "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\n";

fn traefik(extra: &str) -> String {
    format!("{MINIMAL}spec:\n  proxy: traefik\n{extra}")
}

fn parse_err(doc: &str) -> ParseError {
    parse(doc.as_bytes()).expect_err("document should not parse")
}

fn field_errors(doc: &str) -> Vec<FieldError> {
    match load(doc.as_bytes()) {
        Ok(_) => panic!("document should be rejected:\n{doc}"),
        Err(e) => e.field_errors(),
    }
}

fn has_error(errors: &[FieldError], path: &str, needle: &str) -> bool {
    errors
        .iter()
        .any(|e| e.path == path && e.message.contains(needle))
}

#[track_caller]
fn assert_error(doc: &str, path: &str, needle: &str) {
    let errors = field_errors(doc);
    assert!(
        has_error(&errors, path, needle),
        "expected {path}: …{needle}… in {errors:#?}"
    );
}

fn valid(doc: &str) -> ValidatedSpec {
    match load(doc.as_bytes()) {
        Ok(v) => v,
        Err(e) => panic!("document should be valid: {e}\n{doc}"),
    }
}

mod policies;

// === parse ===

#[test]
fn minimal_document_gets_every_documented_default() {
    let v = valid(MINIMAL);
    let spec = v.spec();
    assert_eq!(v.name(), "default");
    assert_eq!(spec.proxy, ProxyKind::Caddy);
    assert_eq!(v.domain_suffix(), "localhost");
    assert_eq!(spec.discovery.primary, DiscoveryPrimary::Nomad);
    assert_eq!(spec.discovery.consul.address, "127.0.0.1:8500");
    assert_eq!(spec.discovery.nomad.address, "http://127.0.0.1:4646");
    assert!(!spec.discovery.consul.exposed_by_default && !spec.discovery.nomad.exposed_by_default);
    assert_eq!(v.entry_point("web").map(|l| l.address.port), Some(80));
    assert_eq!(
        v.entry_point("web").and_then(|l| l.redirect_to.as_deref()),
        Some("websecure")
    );
    assert_eq!(
        v.entry_point("websecure").map(|l| l.address.port),
        Some(443)
    );
    assert_eq!(v.tls().cert_dir, "/pv/CERTS");
    assert_eq!(v.min_tls_version(), TlsVersion::VersionTLS12);
    assert!(!v.dashboard().insecure);
    assert_eq!(v.job().id, "proxy");
    assert_eq!(v.job().job_type, JobType::System);
    assert_eq!(v.version(), "2.11.7");
    assert_eq!(
        v.driver(),
        &Driver::Docker(DockerDriver {
            image: Some("caddy:2.11.7".into())
        })
    );
    assert_eq!(
        v.rollout().healthy_deadline,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(
        v.rollout().min_healthy_time,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(v.rollout().on_failure, OnFailure::Rollback);
    assert_eq!(v.drift_policy(), DriftPolicy::Correct);
    assert!(!v.paused());
}

#[test]
fn security_headers_default_to_the_seeds_five() {
    let v = valid(MINIMAL);
    let h = v.security_headers();
    assert_eq!(
        h.get("X-Frame-Options").map(String::as_str),
        Some("SAMEORIGIN")
    );
    assert_eq!(
        h.get("X-XSS-Protection").map(String::as_str),
        Some("1; mode=block")
    );
    assert_eq!(
        h.get("X-Content-Type-Options").map(String::as_str),
        Some("nosniff")
    );
    assert_eq!(
        h.get("Referrer-Policy").map(String::as_str),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(
        h.get("Permissions-Policy").map(String::as_str),
        Some("accelerometer=(), camera=(), geolocation=(), microphone=()")
    );
    assert_eq!(h.len(), 5);
}

#[test]
fn json_documents_parse_like_yaml() {
    let json = r#"{"apiVersion":"proxy-operator.io/v1alpha1","kind":"ProxyConfig","spec":{"proxy":"traefik","domainSuffix":"example.com"}}"#;
    let v = valid(json);
    assert_eq!(v.proxy(), ProxyKind::Traefik);
    assert_eq!(v.domain_suffix(), "example.com");
    assert_eq!(v.version(), "3.7.15");
}

#[test]
fn documents_over_512_kib_are_refused_before_parsing() {
    let mut doc = String::from(MINIMAL);
    doc.push_str(&"# padding\n".repeat(MAX_DOCUMENT_BYTES / 10 + 1));
    assert!(matches!(parse_err(&doc), ParseError::TooLarge { .. }));
}

#[test]
fn empty_and_null_documents_are_refused_with_a_clear_message() {
    for doc in ["", "   \n\n", "# only a comment\n", "null", "~", "---\n"] {
        let err = parse_err(doc);
        assert_eq!(err, ParseError::Empty, "{doc:?}");
        assert!(err.to_string().contains("empty or null"));
    }
}

#[test]
fn lists_and_scalars_at_the_top_are_refused() {
    assert_eq!(
        parse_err("- a\n- b\n"),
        ParseError::NotAMapping { found: "list" }
    );
    assert_eq!(
        parse_err("hello"),
        ParseError::NotAMapping { found: "string" }
    );
}

#[test]
fn yaml_alias_bombs_hit_the_budget_instead_of_memory() {
    let mut doc = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        doc.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    let start = std::time::Instant::now();
    let err = parse_err(&doc);
    assert!(matches!(err, ParseError::Syntax { .. }), "{err:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn deeply_nested_documents_are_refused() {
    let deep_flow = format!("{MINIMAL}x: {}{}\n", "[".repeat(200), "]".repeat(200));
    assert!(matches!(parse_err(&deep_flow), ParseError::Syntax { .. }));
    let mut deep_block = String::from(MINIMAL);
    for i in 0..100 {
        deep_block.push_str(&format!("{}k{i}:\n", "  ".repeat(i)));
    }
    assert!(matches!(parse_err(&deep_block), ParseError::Syntax { .. }));
}

#[test]
fn duplicate_keys_are_refused_with_their_line() {
    let doc = format!("{MINIMAL}spec:\n  proxy: traefik\n  proxy: caddy\n");
    match parse_err(&doc) {
        ParseError::Syntax { message, line, .. } => {
            assert!(message.contains("duplicate key \"proxy\""), "{message}");
            assert_eq!(line, Some(5));
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let json =
        r#"{"apiVersion":"proxy-operator.io/v1alpha1","kind":"ProxyConfig","kind":"ProxyConfig"}"#;
    assert!(matches!(parse_err(json), ParseError::Syntax { .. }));
}

#[test]
fn yaml_1_1_booleans_are_not_booleans() {
    for word in ["yes", "on", "y", "off", "no"] {
        let doc = format!("{MINIMAL}spec:\n  paused: {word}\n");
        let errors = parse_err(&doc).field_errors();
        assert!(
            has_error(&errors, "spec.paused", "write true or false"),
            "{word}: {errors:?}"
        );
    }
    assert!(valid(&format!("{MINIMAL}spec:\n  paused: True\n")).paused());
}

#[test]
fn wrong_types_name_the_field_and_the_line() {
    let doc = format!("{MINIMAL}spec:\n  job:\n    resources:\n      cpu: lots\n");
    let errors = parse_err(&doc).field_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.job.resources.cpu");
    assert!(
        errors[0].message.contains("line 6"),
        "{}",
        errors[0].message
    );
}

#[test]
fn unknown_fields_are_all_reported_with_the_closest_known_name() {
    let doc = format!(
        "{MINIMAL}spec:\n  proxi: traefik\n  entryPoints:\n    web:\n      adress: \":80\"\n  tls:\n    certdir: /x\n"
    );
    let errors = parse_err(&doc).field_errors();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(has_error(&errors, "spec.proxi", "did you mean \"proxy\""));
    assert!(has_error(
        &errors,
        "spec.entryPoints.web.adress",
        "did you mean \"address\""
    ));
    assert!(has_error(
        &errors,
        "spec.tls.certdir",
        "did you mean \"certDir\""
    ));
}

#[test]
fn unknown_enum_values_suggest_the_closest_variant() {
    let errors = parse_err(&format!("{MINIMAL}spec:\n  proxy: traefk\n")).field_errors();
    assert!(
        has_error(&errors, "spec.proxy", "did you mean \"traefik\""),
        "{errors:?}"
    );
}

#[test]
fn wrong_api_version_or_kind_is_refused() {
    let errors = parse_err("apiVersion: v1\nkind: ProxyConfig\n").field_errors();
    assert!(errors.iter().any(|e| e.path == "apiVersion"), "{errors:?}");
    let errors =
        parse_err("apiVersion: proxy-operator.io/v1alpha1\nkind: Deployment\n").field_errors();
    assert!(errors.iter().any(|e| e.path == "kind"), "{errors:?}");
    let errors = parse_err("kind: ProxyConfig\n").field_errors();
    assert!(
        errors.iter().any(|e| e.message.contains("apiVersion")),
        "{errors:?}"
    );
}

#[test]
fn inline_basic_auth_users_are_refused_with_the_fix_and_without_echoing_them() {
    let doc = traefik(
        "  middlewares:\n    basicAuth:\n      users: [\"admin:$apr1$s3cr3tHash\"]\n      usersFrom: {file: /etc/htpasswd}\n",
    );
    let errors = parse_err(&doc).field_errors();
    assert!(
        has_error(&errors, "spec.middlewares.basicAuth.users", "usersFrom"),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| !e.message.contains("s3cr3tHash")),
        "{errors:?}"
    );
}

#[test]
fn basic_auth_by_reference_is_accepted() {
    let v = valid(&traefik(
        "  middlewares:\n    basicAuth:\n      usersFrom: {consulKey: proxy-operator/secrets/htpasswd}\n",
    ));
    assert_eq!(
        v.basic_auth().map(|b| &b.users_from),
        Some(&UsersFrom::ConsulKey(
            "proxy-operator/secrets/htpasswd".into()
        ))
    );
    assert_error(
        &traefik("  middlewares:\n    basicAuth:\n      usersFrom: {file: htpasswd}\n"),
        "spec.middlewares.basicAuth.usersFrom.file",
        "absolute path",
    );
    assert_error(
        &traefik("  middlewares:\n    basicAuth:\n      usersFrom: {consulKey: /leading}\n"),
        "spec.middlewares.basicAuth.usersFrom.consulKey",
        "Consul KV key",
    );
}

// === validate ===

#[test]
fn all_validation_errors_are_reported_at_once() {
    let doc = traefik(
        "  domainSuffix: \"not a domain\"\n  middlewares:\n    ipAllowList:\n      sourceRange: [10.0.0.0/8, 192.168.0.0/16, 10.0.0.300/8]\n  rollout:\n    healthyDeadline: banana\n  job:\n    resources: {memoryMB: 5}\n",
    );
    let errors = field_errors(&doc);
    assert!(errors.len() >= 4, "{errors:#?}");
    assert!(has_error(&errors, "spec.domainSuffix", "not a hostname"));
    assert!(has_error(
        &errors,
        "spec.middlewares.ipAllowList.sourceRange[2]",
        "\"10.0.0.300/8\" is not a CIDR"
    ));
    assert!(has_error(
        &errors,
        "spec.middlewares.ipAllowList.sourceRange[2]",
        "e.g. 10.0.0.0/8"
    ));
    assert!(has_error(
        &errors,
        "spec.rollout.healthyDeadline",
        "not a duration"
    ));
    assert!(has_error(
        &errors,
        "spec.job.resources.memoryMB",
        "minimum of 10 MB"
    ));
}

#[test]
fn cidrs_and_single_addresses_are_accepted_in_the_allow_list() {
    let v = valid(&traefik(
        "  middlewares:\n    ipAllowList:\n      sourceRange: [10.0.0.0/8, 192.0.2.7, \"2001:db8::/32\"]\n",
    ));
    let nets: Vec<String> = v
        .ip_allow_list()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
}

#[test]
fn cidrs_with_host_bits_are_a_warning_not_an_error() {
    let v = valid(&traefik(
        "  middlewares:\n    ipAllowList:\n      sourceRange: [10.1.2.3/8]\n",
    ));
    assert!(
        v.warnings()
            .iter()
            .any(|w| w.path.ends_with("sourceRange[0]") && w.message.contains("10.0.0.0/8"))
    );
}

#[test]
fn an_empty_allow_list_is_refused_because_it_would_block_everyone() {
    assert_error(
        &traefik("  middlewares:\n    ipAllowList:\n      sourceRange: []\n"),
        "spec.middlewares.ipAllowList.sourceRange",
        "at least one",
    );
}

#[test]
fn ports_out_of_range_or_not_numbers_are_refused() {
    assert_error(
        &traefik("  entryPoints:\n    web: {address: \":99999\"}\n"),
        "spec.entryPoints.web.address",
        "1-65535",
    );
    assert_error(
        &traefik("  entryPoints:\n    web: {address: \":http\"}\n"),
        "spec.entryPoints.web.address",
        "not a number",
    );
    assert_error(
        &traefik("  entryPoints:\n    web: {address: \":0\"}\n"),
        "spec.entryPoints.web.address",
        "1-65535",
    );
    assert_error(
        &traefik("  metrics: {address: \"8082\"}\n"),
        "spec.metrics.address",
        "no port",
    );
}

#[test]
fn listen_addresses_accept_hosts_ipv4_and_bracketed_ipv6() {
    let v = valid(&traefik(
        "  entryPoints:\n    web: {address: \"127.0.0.1:8000\", redirectTo: null}\n    websecure: {address: \"[::1]:8443\"}\n    extra:\n      admin: {address: \"localhost:9000\"}\n",
    ));
    let shown: Vec<String> = v
        .entry_points()
        .iter()
        .map(|l| l.address.to_string())
        .collect();
    assert_eq!(shown, ["127.0.0.1:8000", "[::1]:8443", "localhost:9000"]);
    assert_eq!(
        v.entry_point("web").and_then(|l| l.redirect_to.clone()),
        None
    );
    assert_error(
        &traefik("  entryPoints:\n    websecure: {address: \"::1:443\"}\n"),
        "spec.entryPoints.websecure.address",
        "brackets",
    );
}

#[test]
fn two_listeners_on_one_port_are_refused() {
    assert_error(
        &traefik("  entryPoints:\n    extra:\n      alt: {address: \"127.0.0.1:80\"}\n"),
        "spec.entryPoints.extra.alt.address",
        "conflicts with spec.entryPoints.web.address",
    );
    assert_error(
        &traefik("  dashboard: {address: \":8082\"}\n"),
        "spec.dashboard.address",
        "conflicts with spec.metrics.address",
    );
    // Different hosts on one port collide too: the job reserves the port on the host, and
    // Nomad refuses one static port reserved twice.
    assert_error(
        &traefik(
            "  entryPoints:\n    web: {address: \"127.0.0.1:8000\", redirectTo: null}\n    websecure: {address: \"127.0.0.2:8000\"}\n",
        ),
        "spec.entryPoints.websecure.address",
        "conflicts with spec.entryPoints.web.address",
    );
}

#[test]
fn redirect_to_a_missing_entry_point_is_refused_with_a_suggestion() {
    assert_error(
        &traefik("  entryPoints:\n    web: {address: \":80\", redirectTo: websecur}\n"),
        "spec.entryPoints.web.redirectTo",
        "did you mean \"websecure\"",
    );
    assert_error(
        &traefik("  entryPoints:\n    web: {address: \":80\", redirectTo: web}\n"),
        "spec.entryPoints.web.redirectTo",
        "itself",
    );
    assert_error(
        &traefik("  entryPoints:\n    websecure: {address: \":443\", redirectTo: web}\n"),
        "spec.entryPoints.web.redirectTo",
        "redirects too",
    );
}

#[test]
fn extra_entry_points_need_a_plain_unreserved_name() {
    assert_error(
        &traefik("  entryPoints:\n    extra:\n      \"my port\": {address: \":81\"}\n"),
        "spec.entryPoints.extra.my port",
        "not an entry point name",
    );
    assert_error(
        &traefik("  entryPoints:\n    extra:\n      metrics: {address: \":81\"}\n"),
        "spec.entryPoints.extra.metrics",
        "reserved",
    );
}

#[test]
fn refresh_intervals_under_a_second_and_overflowing_durations_are_refused_clearly() {
    for field in ["consul", "nomad"] {
        for value in ["500us", "999ms"] {
            assert_error(
                &traefik(&format!(
                    "  discovery:\n    {field}: {{refreshInterval: {value}}}\n"
                )),
                &format!("spec.discovery.{field}.refreshInterval"),
                "at least \"1s\"",
            );
        }
    }
    valid(&traefik(
        "  discovery:\n    consul: {refreshInterval: 1s}\n",
    ));
    assert_error(
        &traefik(
            "  discovery:\n    throttleDuration: 340282366920938463463374607431768211.999us\n",
        ),
        "spec.discovery.throttleDuration",
        "too long",
    );
}

#[test]
fn rate_limits_beyond_a_signed_64_bit_integer_are_refused() {
    for field in ["average", "burst"] {
        let doc = traefik(
            &format!(
                "  middlewares:\n    rateLimit: {{average: 5, {field}: 18446744073709551615}}\n"
            )
            .replace("average: 5, average", "average"),
        );
        assert_error(
            &doc,
            &format!("spec.middlewares.rateLimit.{field}"),
            "at most",
        );
    }
    let v = valid(&traefik(
        "  middlewares:\n    rateLimit: {average: 9223372036854775807, burst: 9223372036854775807}\n",
    ));
    assert_eq!(v.rate_limit().map(|r| r.burst), Some(i64::MAX as u64));
}

#[test]
fn durations_must_be_go_style_and_positive() {
    assert_error(
        &traefik("  rollout: {healthyDeadline: 60}\n"),
        "spec.rollout.healthyDeadline",
        "",
    );
    assert_error(
        &traefik("  rollout: {healthyDeadline: \"60\"}\n"),
        "spec.rollout.healthyDeadline",
        "lacks a unit",
    );
    assert_error(
        &traefik("  rollout: {healthyDeadline: 0s}\n"),
        "spec.rollout.healthyDeadline",
        "longer than zero",
    );
    assert_error(
        &traefik("  discovery:\n    consul: {refreshInterval: 5 minutes}\n"),
        "spec.discovery.consul.refreshInterval",
        "",
    );
    let v = valid(&traefik(
        "  rollout: {healthyDeadline: 1m30s, minHealthyTime: 500ms}\n",
    ));
    assert_eq!(
        v.rollout().healthy_deadline,
        std::time::Duration::from_secs(90)
    );
}

#[test]
fn min_healthy_time_must_be_shorter_than_the_deadline() {
    assert_error(
        &traefik("  rollout: {healthyDeadline: 10s, minHealthyTime: 10s}\n"),
        "spec.rollout.minHealthyTime",
        "shorter than healthyDeadline",
    );
}

#[test]
fn gate_durations_over_the_journal_limit_are_refused_with_the_limit() {
    assert_error(
        &traefik("  rollout: {healthyDeadline: 169h}\n"),
        "spec.rollout.healthyDeadline",
        "use at most \"168h0m0s\"",
    );
    assert_error(
        &traefik("  rollout: {healthyDeadline: 169h, minHealthyTime: 168h1s}\n"),
        "spec.rollout.minHealthyTime",
        "longer than 168h0m0s",
    );
    // Exactly the limit is what the journal check accepts back, so it validates.
    let v = valid(&traefik(
        "  rollout: {healthyDeadline: 168h, minHealthyTime: 1h}\n",
    ));
    assert_eq!(
        v.rollout().healthy_deadline,
        crate::rollout::MAX_GATE_DURATION
    );
}

#[test]
fn hostnames_are_checked_in_domain_suffix_and_probes() {
    assert_error(
        &traefik("  domainSuffix: -bad.example.com\n"),
        "spec.domainSuffix",
        "not a hostname",
    );
    assert_error(
        &traefik("  domainSuffix: under_score.com\n"),
        "spec.domainSuffix",
        "not a hostname",
    );
    assert_error(
        &traefik("  rollout:\n    probes: [{host: \"who am i\"}]\n"),
        "spec.rollout.probes[0].host",
        "not a hostname",
    );
    valid(&traefik(
        "  rollout:\n    probes: [{host: whoami.localhost}, {host: 127.0.0.1, path: /ping}]\n",
    ));
}

#[test]
fn probes_must_target_an_existing_entry_point_with_a_real_status_and_path() {
    let doc = traefik(
        "  rollout:\n    probes: [{host: a.example.com, entryPoint: webb, expectStatus: 42, path: health}]\n",
    );
    let errors = field_errors(&doc);
    assert!(
        has_error(
            &errors,
            "spec.rollout.probes[0].entryPoint",
            "does not exist"
        ),
        "{errors:#?}"
    );
    assert!(has_error(
        &errors,
        "spec.rollout.probes[0].expectStatus",
        "100-599"
    ));
    assert!(has_error(
        &errors,
        "spec.rollout.probes[0].path",
        "start with '/'"
    ));
}

#[test]
fn paths_must_be_absolute_and_stay_inside_the_cert_dir() {
    assert_error(
        &traefik("  tls: {certDir: pv/CERTS}\n"),
        "spec.tls.certDir",
        "absolute path",
    );
    assert_error(
        &traefik("  tls:\n    certificates: [{certFile: ../etc/a.crt, keyFile: a.key}]\n"),
        "spec.tls.certificates[0].certFile",
        "'..'",
    );
    let v = valid(&traefik(
        "  tls:\n    certificates: [{certFile: a.crt, keyFile: /keys/a.key}]\n",
    ));
    assert_eq!(
        v.certificates()[0].cert_file,
        std::path::PathBuf::from("/pv/CERTS/a.crt")
    );
    assert_eq!(
        v.certificates()[0].key_file,
        std::path::PathBuf::from("/keys/a.key")
    );
}

#[test]
fn inline_pem_keys_are_refused_without_echoing_them() {
    let doc = traefik(
        "  tls:\n    certificates:\n      - certFile: a.crt\n        keyFile: \"-----BEGIN PRIVATE KEY-----\\nMIIsecret\\n-----END PRIVATE KEY-----\"\n",
    );
    let errors = field_errors(&doc);
    assert!(
        has_error(&errors, "spec.tls.certificates[0].keyFile", "inline PEM"),
        "{errors:?}"
    );
    assert!(errors.iter().all(|e| !e.message.contains("MIIsecret")));
}

#[test]
fn acme_needs_an_email_and_a_directory_url() {
    assert_error(
        &traefik("  tls:\n    acme: {email: nobody}\n"),
        "spec.tls.acme.email",
        "not an e-mail",
    );
    assert_error(
        &traefik("  tls:\n    acme: {email: ops@example.com, caServer: \"ftp://x\"}\n"),
        "spec.tls.acme.caServer",
        "ACME directory URL",
    );
    let v = valid(&traefik("  tls:\n    acme: {email: ops@example.com}\n"));
    let acme = v.acme().expect("acme resolved");
    assert_eq!(
        acme.storage,
        std::path::PathBuf::from("/pv/CERTS/acme.json")
    );
    assert_eq!(acme.ca_server.as_deref(), Some(LETS_ENCRYPT_DIRECTORY));
}

#[test]
fn traefik_websecure_without_certificates_or_acme_is_a_warning() {
    let v = valid(&traefik(""));
    assert!(
        v.warnings()
            .iter()
            .any(|w| w.path == "spec.tls" && w.message.contains("default certificate"))
    );
    assert!(
        valid(MINIMAL).warnings().is_empty(),
        "Caddy obtains certificates itself"
    );
}

#[test]
fn traefik_only_options_are_refused_for_caddy() {
    let doc = format!(
        "{MINIMAL}spec:\n  proxy: caddy\n  dashboard: {{insecure: true}}\n  middlewares:\n    rateLimit: {{average: 10}}\n"
    );
    let errors = field_errors(&doc);
    assert!(
        has_error(&errors, "spec.dashboard.insecure", "Traefik-only"),
        "{errors:#?}"
    );
    assert!(has_error(
        &errors,
        "spec.middlewares.rateLimit",
        "Traefik-only"
    ));
}

#[test]
fn insecure_dashboard_needs_the_dashboard_enabled() {
    assert_error(
        &traefik("  dashboard: {enabled: false, insecure: true}\n"),
        "spec.dashboard.insecure",
        "enabled: true",
    );
}

#[test]
fn rate_limit_defaults_and_bounds() {
    let v = valid(&traefik("  middlewares:\n    rateLimit: {average: 100}\n"));
    let r = v.rate_limit().expect("set");
    assert_eq!(
        (r.average, r.burst, r.period),
        (100, 1, std::time::Duration::from_secs(1))
    );
    assert_error(
        &traefik("  middlewares:\n    rateLimit: {average: 0}\n"),
        "spec.middlewares.rateLimit.average",
        "at least 1",
    );
    let errors =
        parse_err(&traefik("  middlewares:\n    rateLimit: {average: -5}\n")).field_errors();
    assert!(
        errors
            .iter()
            .any(|e| e.path == "spec.middlewares.rateLimit.average"),
        "{errors:?}"
    );
}

#[test]
fn security_headers_can_be_overridden_extended_removed_or_disabled() {
    let v = valid(&traefik(
        "  middlewares:\n    securityHeaders:\n      headers: {X-Frame-Options: DENY, Strict-Transport-Security: max-age=31536000}\n      remove: [X-XSS-Protection]\n",
    ));
    let h = v.security_headers();
    assert_eq!(h.get("X-Frame-Options").map(String::as_str), Some("DENY"));
    assert_eq!(
        h.get("Strict-Transport-Security").map(String::as_str),
        Some("max-age=31536000")
    );
    assert!(!h.contains_key("X-XSS-Protection"));
    assert_eq!(h.len(), 5);
    let v = valid(&traefik(
        "  middlewares:\n    securityHeaders: {enabled: false}\n",
    ));
    assert!(v.security_headers().is_empty());
}

#[test]
fn bad_security_headers_are_refused() {
    assert_error(
        &traefik("  middlewares:\n    securityHeaders:\n      headers: {\"Bad Header\": x}\n"),
        "spec.middlewares.securityHeaders.headers.Bad Header",
        "not an HTTP header name",
    );
    assert_error(
        &traefik(
            "  middlewares:\n    securityHeaders:\n      headers: {X-A: \"a\\r\\nSet-Cookie: x\"}\n",
        ),
        "spec.middlewares.securityHeaders.headers.X-A",
        "line breaks",
    );
    assert_error(
        &traefik("  middlewares:\n    securityHeaders:\n      remove: [X-Nope]\n"),
        "spec.middlewares.securityHeaders.remove[0]",
        "not a default header",
    );
    assert_error(
        &traefik(
            "  middlewares:\n    securityHeaders:\n      headers: {X-Frame-Options: DENY}\n      remove: [x-frame-options]\n",
        ),
        "spec.middlewares.securityHeaders.remove[0]",
        "both set",
    );
}

#[test]
fn discovery_addresses_are_checked() {
    assert_error(
        &traefik("  discovery:\n    consul: {address: \"http://127.0.0.1:8500\"}\n"),
        "spec.discovery.consul.address",
        "without a scheme",
    );
    assert_error(
        &traefik("  discovery:\n    consul: {address: \":8500\"}\n"),
        "spec.discovery.consul.address",
        "needs a host",
    );
    assert_error(
        &traefik("  discovery:\n    nomad: {address: \"127.0.0.1:4646\"}\n"),
        "spec.discovery.nomad.address",
        "http(s) URL",
    );
}

#[test]
fn count_only_applies_to_service_jobs() {
    assert_error(
        &traefik("  job: {count: 2}\n"),
        "spec.job.count",
        "type: service",
    );
    let v = valid(&traefik("  job: {type: service}\n"));
    assert_eq!(v.job().count, Some(1));
}

#[test]
fn job_fields_are_checked() {
    let doc = traefik(
        "  job:\n    id: \"my proxy\"\n    datacenters: []\n    namespace: \"\"\n    driver: {rawExec: {command: bin/traefik}}\n    version: \"3.7 beta\"\n",
    );
    let errors = field_errors(&doc);
    assert!(
        has_error(&errors, "spec.job.id", "Nomad job ID"),
        "{errors:#?}"
    );
    assert!(has_error(&errors, "spec.job.datacenters", "at least one"));
    assert!(has_error(&errors, "spec.job.namespace", "not a valid name"));
    assert!(has_error(
        &errors,
        "spec.job.driver.rawExec.command",
        "relative path"
    ));
    assert!(has_error(
        &errors,
        "spec.job.version",
        "not a version label"
    ));
}

#[test]
fn drivers_resolve_their_defaults_from_the_proxy_and_version() {
    let v = valid(&traefik("  job: {version: 3.6.0}\n"));
    assert_eq!(
        v.driver(),
        &Driver::Docker(DockerDriver {
            image: Some("traefik:v3.6.0".into())
        })
    );
    let v = valid(&traefik(
        "  job:\n    driver: {rawExec: {command: /opt/bin/traefik, args: [--log.level=INFO]}}\n",
    ));
    assert!(
        matches!(v.driver(), Driver::RawExec(c) if c.command == "/opt/bin/traefik" && c.args.len() == 1)
    );
    let errors = parse_err(&traefik("  job:\n    driver: {podman: {image: x}}\n")).field_errors();
    assert!(
        has_error(&errors, "spec.job.driver.podman", "unknown field"),
        "{errors:?}"
    );
}

// === digest ===

#[test]
fn digest_ignores_pause_and_retry_nonce_but_not_real_changes() {
    let base = valid(&traefik("")).digest().to_owned();
    assert_eq!(base.len(), 64);
    assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(valid(&traefik("  paused: true\n")).digest(), base);
    assert_eq!(valid(&traefik("  retryNonce: again\n")).digest(), base);
    assert_ne!(
        valid(&traefik("  domainSuffix: example.com\n")).digest(),
        base
    );
    assert_ne!(valid(MINIMAL).digest(), base);
}

#[test]
fn digest_does_not_depend_on_key_order_or_format() {
    let yaml = traefik("  domainSuffix: example.com\n  discovery: {primary: consul}\n");
    let json = r#"{"spec":{"discovery":{"primary":"consul"},"domainSuffix":"example.com","proxy":"traefik"},"kind":"ProxyConfig","apiVersion":"proxy-operator.io/v1alpha1"}"#;
    assert_eq!(valid(&yaml).digest(), valid(json).digest());
}

#[test]
fn spelled_out_defaults_have_the_same_digest_as_omitted_ones() {
    let explicit = traefik(
        "  domainSuffix: localhost\n  job: {id: proxy, version: 3.7.15, driver: {docker: {image: \"traefik:v3.7.15\"}}}\n",
    );
    assert_eq!(valid(&explicit).digest(), valid(&traefik("")).digest());
}

#[test]
fn resolved_config_round_trips_through_parse_and_validate() {
    let v = valid(&traefik(
        "  middlewares:\n    rateLimit: {average: 5}\n  job: {type: service}\n",
    ));
    let json = serde_json::to_vec(v.config()).expect("serialises");
    let again = valid(std::str::from_utf8(&json).expect("utf-8"));
    assert_eq!(again.config(), v.config());
    assert_eq!(again.digest(), v.digest());
}

#[test]
fn entry_points_that_nomad_would_refuse_as_ports_are_rejected() {
    assert_error(
        &traefik("  entryPoints:\n    extra:\n      internal: {address: \":9000\"}\n"),
        "spec.entryPoints.extra.internal",
        "reserved",
    );
    assert_error(
        &traefik(
            "  entryPoints:\n    extra:\n      a-b: {address: \":9000\"}\n      a_b: {address: \":9001\"}\n",
        ),
        "spec.entryPoints.extra.a_b",
        "same Nomad port label",
    );
    assert_error(
        &traefik(
            "  entryPoints:\n    web: {address: \"127.0.0.1:8000\"}\n    websecure: {address: \"10.0.0.1:8000\"}\n",
        ),
        "spec.entryPoints.websecure.address",
        "Nomad reserves host ports",
    );
    valid(&traefik(
        "  entryPoints:\n    extra:\n      a-b: {address: \":9000\"}\n      c_d: {address: \":9001\"}\n",
    ));
}

#[test]
fn cert_volume_defaults_to_certs_and_must_be_a_name() {
    assert_eq!(valid(&traefik("")).job().cert_volume, "certs");
    valid(&traefik("  job: {certVolume: \"\"}\n"));
    assert_error(
        &traefik("  job: {certVolume: \"a b\"}\n"),
        "spec.job.certVolume",
        "not a valid name",
    );
}
