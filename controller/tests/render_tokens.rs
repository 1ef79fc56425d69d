//! `spec.job.tokens`: where Traefik's Consul and Nomad tokens come from when ACLs are on. The
//! rendered job names the source (identities, templates) and never holds a token; the default
//! renders no token plumbing at all; bad input is refused with the field and the fix.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

use proxy_operator::render::model::TokenSource;
use proxy_operator::render::nomad_job::{LEFT_DELIM, TOKENS_ENV_PATH, nomad_token_action};
use proxy_operator::render::{self, RenderContext, Rendered};
use proxy_operator::spec::{self, FieldError, ProxyTokens, ValidatedSpec};
use serde_json::Value;

fn doc(proxy: &str, job: &str) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: {proxy}\n  job:\n    id: edge\n{job}"
    )
}

fn load(text: &str) -> ValidatedSpec {
    spec::load(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn render(text: &str) -> Rendered {
    render::render(&load(text), &RenderContext::default()).unwrap()
}

fn errors(text: &str) -> Vec<FieldError> {
    match spec::load(text.as_bytes()) {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(e) => e.field_errors(),
    }
}

fn task(job: &Value) -> &Value {
    &job["TaskGroups"][0]["Tasks"][0]
}

fn templates(job: &Value) -> &Vec<Value> {
    task(job)["Templates"].as_array().unwrap()
}

/// Every string in the job, with the key it sits under.
fn strings<'a>(v: &'a Value, key: &str, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((key.to_string(), s)),
        Value::Array(items) => items.iter().for_each(|i| strings(i, key, out)),
        Value::Object(map) => map.iter().for_each(|(k, i)| strings(i, k, out)),
        _ => {}
    }
}

/// A Nomad/Consul ACL secret is a UUID; a workload identity is a JWT (`eyJ...`, three
/// base64url parts).
fn looks_like_a_token(s: &str) -> bool {
    let uuid = s
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .any(|w| {
            let parts: Vec<usize> = w.split('-').map(str::len).collect();
            parts == [8, 4, 4, 4, 12]
        });
    let jwt = s.split_whitespace().any(|w| {
        w.trim_matches('"').starts_with("eyJ")
            && w.split('.').filter(|p| !p.is_empty()).count() == 3
    });
    uuid || jwt
}

#[track_caller]
fn assert_no_token(job: &Value) {
    let mut all = Vec::new();
    strings(job, "", &mut all);
    for (key, s) in all {
        assert!(
            !looks_like_a_token(s),
            "{key} holds a token-looking value: {s}"
        );
        if key.to_ascii_lowercase().contains("token") {
            panic!("the job has a token field {key}: {s}");
        }
    }
}

const IDENTITY: &str = "    tokens:\n      workloadIdentity: {}\n";
const VARIABLE: &str = "    tokens:\n      nomadVariable: {}\n";

#[test]
fn the_token_check_of_these_tests_catches_a_uuid_and_a_jwt() {
    assert!(looks_like_a_token(
        "token: \"5d1e8c2f-41aa-0b7d-9a3e-0123456789ab\""
    ));
    assert!(looks_like_a_token(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    ));
    assert!(!looks_like_a_token(&nomad_token_action(
        &TokenSource::WorkloadIdentity
    )));
    let mut job = render(&doc("traefik", IDENTITY)).job;
    job["TaskGroups"][0]["Tasks"][0]["Env"] =
        serde_json::json!({"X": "5d1e8c2f-41aa-0b7d-9a3e-0123456789ab"});
    let caught = std::panic::catch_unwind(|| assert_no_token(&job));
    assert!(caught.is_err(), "a UUID in the job must be caught");
}

#[test]
fn without_a_token_source_the_job_has_no_identity_no_env_template_and_the_config_in_local() {
    let r = render(&doc("traefik", ""));
    let t = task(&r.job);
    assert!(
        t.get("Identity").is_none() && t.get("Identities").is_none(),
        "{t}"
    );
    assert_eq!(templates(&r.job).len(), 1);
    assert_eq!(templates(&r.job)[0]["DestPath"], "local/traefik.yml");
    assert!(templates(&r.job)[0].get("Envvars").is_none());
    assert!(!r.traefik_static.unwrap().contains("token"));
}

#[test]
fn workload_identity_gives_the_task_nomad_token_a_consul_identity_and_consul_http_token_file() {
    let r = render(&doc("traefik", IDENTITY));
    let t = task(&r.job);
    assert_eq!(
        t["Identity"],
        serde_json::json!({"ChangeMode": "restart", "Env": true})
    );
    assert_eq!(
        t["Identities"],
        serde_json::json!([{"Name": "consul_default", "Audience": ["consul.io"], "TTL": 3_600_000_000_000_i64}])
    );
    let env = &templates(&r.job)[1];
    assert_eq!(env["DestPath"], TOKENS_ENV_PATH);
    assert_eq!(env["Envvars"], true);
    assert_eq!(env["Perms"], "0600");
    assert_eq!(
        env["EmbeddedTmpl"],
        "CONSUL_HTTP_TOKEN_FILE={{ env \"NOMAD_SECRETS_DIR\" }}/consul_token\n"
    );
    assert_no_token(&r.job);
}

#[test]
fn with_a_token_source_the_static_config_is_a_secret_template_whose_nomad_token_is_the_one_action()
{
    for (tokens, source) in [
        (IDENTITY, TokenSource::WorkloadIdentity),
        (
            VARIABLE,
            TokenSource::NomadVariable {
                path: "nomad/jobs/edge".to_string(),
            },
        ),
    ] {
        let r = render(&doc("traefik", tokens));
        let config = &templates(&r.job)[0];
        assert_eq!(config["DestPath"], "secrets/traefik.yml");
        assert_eq!(config["Perms"], "0600");
        assert_eq!(
            task(&r.job)["Config"]["args"],
            serde_json::json!(["--configfile=/secrets/traefik.yml"])
        );
        let yaml = r.traefik_static.unwrap();
        assert_eq!(config["EmbeddedTmpl"], yaml.as_str());
        let action = nomad_token_action(&source);
        // What the Nomad client does: replace the action with the token. The result is the
        // static config Traefik reads, with the token in providers.nomad.endpoint.token, and
        // Traefik's own `{{ normalize .Name }}` untouched.
        let rendered = yaml.replace(&action, "the-token");
        assert!(!rendered.contains(LEFT_DELIM), "{rendered}");
        let parsed: Value = serde_saphyr::from_str(&rendered).unwrap();
        assert_eq!(
            parsed["providers"]["nomad"]["endpoint"]["token"],
            "the-token"
        );
        assert!(rendered.contains("{{ normalize .Name }}"));
        assert!(parsed["providers"]["consul"].get("token").is_none());
        assert_no_token(&r.job);
    }
}

#[test]
fn a_nomad_variable_feeds_consul_http_token_through_an_env_template_and_needs_no_identity_block() {
    let r = render(&doc("traefik", VARIABLE));
    let t = task(&r.job);
    assert!(
        t.get("Identity").is_none() && t.get("Identities").is_none(),
        "{t}"
    );
    let env = &templates(&r.job)[1];
    assert_eq!(env["Envvars"], true);
    assert_eq!(
        env["EmbeddedTmpl"],
        "{{ with nomadVar \"nomad/jobs/edge\" }}CONSUL_HTTP_TOKEN={{ .consul_token }}\n{{ end }}"
    );
    let yaml = r.traefik_static.unwrap();
    assert!(
        yaml.contains(
            "with nomadVar `nomad/jobs/edge` :proxy-operator]][[proxy-operator: .nomad_token"
        ),
        "{yaml}"
    );
    assert_no_token(&r.job);
}

#[test]
fn the_variable_path_defaults_to_the_jobs_own_and_is_written_into_the_document() {
    let spec = load(&doc("traefik", VARIABLE));
    assert_eq!(
        spec.spec().job.tokens,
        Some(ProxyTokens::NomadVariable(spec::NomadVariableTokens {
            path: Some("nomad/jobs/edge".to_string())
        }))
    );
    assert!(
        !spec
            .warnings()
            .iter()
            .any(|w| w.path.starts_with("spec.job")),
        "{:?}",
        spec.warnings()
    );
}

#[test]
fn a_variable_outside_the_jobs_path_is_a_warning_naming_the_policy_to_attach() {
    let spec = load(&doc(
        "traefik",
        "    tokens:\n      nomadVariable: {path: shared/traefik}\n",
    ));
    let w = spec.warnings();
    assert!(
        w.iter()
            .any(|w| w.path == "spec.job.tokens.nomadVariable.path"
                && w.message.contains("nomad acl policy apply -job edge")),
        "{w:?}"
    );
}

#[test]
fn a_bad_variable_path_is_refused_with_the_field_and_an_example() {
    for path in [
        "\"nomad/jobs/x\\\" }}{{ evil\"",
        "/nomad/jobs/x",
        "a//b",
        "\"\"",
    ] {
        let e = errors(&doc(
            "traefik",
            &format!("    tokens:\n      nomadVariable: {{path: {path}}}\n"),
        ));
        assert!(
            e.iter()
                .any(|e| e.path == "spec.job.tokens.nomadVariable.path"
                    && e.message.contains("e.g. nomad/jobs/edge")),
            "{path}: {e:?}"
        );
    }
}

#[test]
fn caddy_with_a_token_source_is_refused_because_it_reads_no_api() {
    let e = errors(&doc("caddy", IDENTITY));
    assert!(
        e.iter().any(|e| e.path == "spec.job.tokens"
            && e.message.contains("admin API")
            && e.message.contains("remove spec.job.tokens")),
        "{e:?}"
    );
}

#[test]
fn an_unknown_token_source_is_refused_naming_the_field_and_the_sources() {
    let e = errors(&doc("traefik", "    tokens:\n      vault: {}\n"));
    let text = format!("{e:?}");
    assert!(text.contains("spec.job.tokens"), "{text}");
    assert!(
        text.contains("workloadIdentity") && text.contains("nomadVariable"),
        "{text}"
    );
    let e = errors(&doc(
        "traefik",
        "    tokens:\n      workloadIdentity: {token: abc}\n",
    ));
    assert!(
        format!("{e:?}").contains("spec.job.tokens.workloadIdentity"),
        "{e:?}"
    );
}

#[test]
fn the_token_source_changes_the_job_digest_so_switching_it_registers_a_new_version() {
    let digests: Vec<String> = ["", IDENTITY, VARIABLE]
        .into_iter()
        .map(|t| render(&doc("traefik", t)).job_digest)
        .collect();
    assert_ne!(digests[0], digests[1]);
    assert_ne!(digests[1], digests[2]);
    assert_ne!(digests[0], digests[2]);
}
