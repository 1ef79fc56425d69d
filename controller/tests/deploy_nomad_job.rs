//! The operator's own Nomad job (`nomad-jobs/proxy-operator.nomad.hcl`) and the ACL policies in
//! `nomad-jobs/acl/`: parsed with hcl-rs, the job evaluated as Nomad's HCL2 would (variable
//! defaults and overrides, locals, `dynamic` blocks), then its structure checked.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

#[path = "../../tests/support/jobfile.rs"]
mod jobfile;

use std::collections::BTreeMap;

use hcl::{Block, Body, Value};
use jobfile::{evaluate_job, label, repo_file};
use proxy_operator::leader::{DEFAULT_LOCK_DELAY, DEFAULT_TTL, GRACEFUL_SHUTDOWN};
use proxy_operator::spec::parse_duration;

fn blocks<'a>(b: &'a Block, ident: &'a str) -> Vec<&'a Block> {
    b.body()
        .blocks()
        .filter(|c| c.identifier() == ident)
        .collect()
}

fn one<'a>(b: &'a Block, ident: &'a str) -> &'a Block {
    let found = blocks(b, ident);
    assert_eq!(
        found.len(),
        1,
        "expected one {ident} block in {}",
        b.identifier()
    );
    found[0]
}

fn attr(b: &Block, key: &str) -> Option<Value> {
    b.body()
        .attributes()
        .find(|a| a.key() == key)
        .map(|a| Value::from(a.expr().clone()))
}

fn string(b: &Block, key: &str) -> String {
    match attr(b, key) {
        Some(Value::String(s)) => s,
        other => panic!("{}.{key} is {other:?}, not a string", b.identifier()),
    }
}

fn task(job: &Block) -> &Block {
    one(one(job, "group"), "task")
}

fn args(task: &Block) -> Vec<String> {
    match attr(one(task, "config"), "args") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => panic!("arg {other:?}"),
            })
            .collect(),
        other => panic!("args: {other:?}"),
    }
}

#[test]
fn the_job_is_a_system_job_whose_health_check_is_the_operators_healthz() {
    let job = evaluate_job(&[]).unwrap();
    assert_eq!(label(&job), "proxy-operator");
    assert_eq!(string(&job, "type"), "system");
    assert_eq!(string(&job, "namespace"), "default");
    let group = one(&job, "group");
    let service = one(group, "service");
    assert_eq!(string(service, "port"), "http");
    let check = one(service, "check");
    assert_eq!(string(check, "type"), "http");
    assert_eq!(string(check, "path"), "/healthz");
    let port = one(one(group, "network"), "port");
    assert_eq!(label(port), "http");
    assert_eq!(attr(port, "static"), Some(Value::from(9090)));
    let restart = one(group, "restart");
    assert_eq!(string(restart, "mode"), "delay");
    let resources = one(task(&job), "resources");
    assert!(attr(resources, "cpu").is_some() && attr(resources, "memory").is_some());
}

#[test]
fn the_consul_check_the_leader_session_binds_to_replaces_a_killed_leader_within_ttl_plus_a_second()
{
    let job = evaluate_job(&[]).unwrap();
    let service = one(one(&job, "group"), "service");
    assert_eq!(
        string(service, "provider"),
        "consul",
        "the session binds to a Consul check"
    );
    let check = one(service, "check");
    let interval = parse_duration(&string(check, "interval")).unwrap();
    let timeout = parse_duration(&string(check, "timeout")).unwrap();
    // A killed leader's check fails at its next run (a hung one after the timeout); Consul
    // then invalidates the session and the lock-delay runs.
    let worst = interval + timeout + DEFAULT_LOCK_DELAY;
    assert!(
        worst < DEFAULT_TTL + std::time::Duration::from_secs(1),
        "{worst:?}"
    );
    // Nomad restarts the task only after about 30 s of failed checks, not after a blip.
    let restart = one(check, "check_restart");
    let limit = attr(restart, "limit").and_then(|v| v.as_u64()).unwrap();
    assert!(interval * u32::try_from(limit).unwrap() >= std::time::Duration::from_secs(20));
}

#[test]
fn kill_timeout_is_longer_than_the_operators_graceful_shutdown_and_the_signal_is_sigterm() {
    let job = evaluate_job(&[]).unwrap();
    let t = task(&job);
    let kill_timeout = parse_duration(&string(t, "kill_timeout")).unwrap();
    assert!(
        kill_timeout > GRACEFUL_SHUTDOWN,
        "{kill_timeout:?} <= {GRACEFUL_SHUTDOWN:?}"
    );
    assert_eq!(string(t, "kill_signal"), "SIGTERM");
}

#[test]
fn prefix_port_and_addresses_come_from_variables() {
    let job = evaluate_job(&[
        ("prefix", Value::from("edge")),
        ("http_port", Value::from(9191)),
        ("consul_addr", Value::from("https://consul.internal:8501")),
        ("namespace", Value::from("infra")),
        (
            "extra_args",
            Value::Array(vec![Value::from("--allowed-driver=raw_exec")]),
        ),
    ])
    .unwrap();
    let t = task(&job);
    let a = args(t);
    assert_eq!(a[0], "run");
    assert!(a.contains(&"--prefix=edge".to_owned()), "{a:?}");
    // The node's address and port, filled in by the Nomad client when the task starts.
    assert!(
        a.contains(&"--http-addr=${NOMAD_ADDR_http}".to_owned()),
        "{a:?}"
    );
    assert_eq!(a.last().unwrap(), "--allowed-driver=raw_exec");
    let env = one(t, "env");
    assert_eq!(
        string(env, "CONSUL_HTTP_ADDR"),
        "https://consul.internal:8501"
    );
    assert_eq!(string(env, "NOMAD_NAMESPACE"), "infra");
    assert_eq!(string(&job, "namespace"), "infra");
    let port = one(one(one(&job, "group"), "network"), "port");
    assert_eq!(attr(port, "static"), Some(Value::from(9191)));
}

#[test]
fn each_driver_gets_exactly_one_config_of_its_kind() {
    let raw = evaluate_job(&[]).unwrap();
    let t = task(&raw);
    assert_eq!(string(t, "driver"), "raw_exec");
    let config = one(t, "config");
    assert_eq!(string(config, "command"), "/usr/local/bin/proxy-operator");
    assert_eq!(attr(config, "image"), None);
    for driver in ["docker", "podman"] {
        let job = evaluate_job(&[("driver", Value::from(driver))]).unwrap();
        let t = task(&job);
        assert_eq!(string(t, "driver"), driver);
        let config = one(t, "config");
        assert!(string(config, "image").contains("proxy-operator"));
        assert_eq!(string(config, "network_mode"), "host");
        assert_eq!(attr(config, "command"), None);
    }
    assert!(evaluate_job(&[("driver", Value::from("lxc"))]).is_err());
}

#[test]
fn tokens_come_from_workload_identity_or_a_template_never_from_the_file() {
    let job = evaluate_job(&[]).unwrap();
    let t = task(&job);
    let identities = blocks(t, "identity");
    assert_eq!(identities.len(), 2);
    assert_eq!(attr(identities[0], "env"), Some(Value::Bool(true)));
    assert_eq!(string(identities[1], "name"), "consul_default");
    let template = one(t, "template");
    assert!(string(template, "data").contains("CONSUL_HTTP_TOKEN_FILE="));
    assert_eq!(attr(template, "env"), Some(Value::Bool(true)));
    assert!(string(template, "destination").starts_with("secrets/"));

    let vault = evaluate_job(&[("token_source", Value::from("vault"))]).unwrap();
    let t = task(&vault);
    one(t, "vault");
    assert!(blocks(t, "identity").is_empty());
    let data = string(one(t, "template"), "data");
    assert!(
        data.contains("{{ with secret \"secret/data/proxy-operator\" }}"),
        "{data}"
    );
    assert!(data.contains("NOMAD_TOKEN={{ .Data.data.nomad_token }}"));

    let kv = evaluate_job(&[("token_source", Value::from("consul-kv"))]).unwrap();
    let data = string(one(task(&kv), "template"), "data");
    assert!(data.contains("{{ key \"proxy-operator-bootstrap/consul_token\" }}"));

    let none = evaluate_job(&[("token_source", Value::from("none"))]).unwrap();
    assert!(blocks(task(&none), "template").is_empty());
    assert!(evaluate_job(&[("token_source", Value::from("literal"))]).is_err());
}

/// True for something shaped like an ACL secret: a UUID (Consul and Nomad) or a Vault token.
fn looks_like_a_token(text: &str) -> bool {
    let uuid = text
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .any(|w| {
            let parts: Vec<usize> = w.split('-').map(str::len).collect();
            parts == [8, 4, 4, 4, 12]
        });
    uuid || text.contains("hvs.") || text.contains("hvb.")
}

#[test]
fn no_token_is_written_in_the_job_file() {
    assert!(looks_like_a_token("X=3f2a1c4e-1b2c-4d5e-8f90-123456789abc"));
    let text = repo_file("nomad-jobs/proxy-operator.nomad.hcl");
    assert!(!looks_like_a_token(&text));
    for source in ["identity", "vault", "consul-kv", "none"] {
        let job = evaluate_job(&[("token_source", Value::from(source))]).unwrap();
        let env = one(task(&job), "env");
        for key in ["CONSUL_HTTP_TOKEN", "NOMAD_TOKEN", "CONSUL_TOKEN"] {
            assert_eq!(attr(env, key), None, "{key} is literal in env ({source})");
        }
    }
}

// === ACL policies ===

/// Rules of a policy file: `(rule, label) -> policy or capabilities`.
fn rules(path: &str) -> BTreeMap<(String, String), Value> {
    let body: Body = hcl::parse(&repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = BTreeMap::new();
    for b in body.blocks() {
        let value = b
            .body()
            .attributes()
            .find(|a| a.key() == "policy" || a.key() == "capabilities")
            .map(|a| Value::from(a.expr().clone()))
            .unwrap_or_else(|| panic!("{path}: {} has no policy", b.identifier()));
        let key = (b.identifier().to_owned(), label(b).to_owned());
        assert!(out.insert(key, value).is_none(), "{path}: duplicate rule");
    }
    assert!(
        body.attributes().next().is_none(),
        "{path}: no top-level grants (acl, operator, keyring)"
    );
    out
}

fn policy(rules: &BTreeMap<(String, String), Value>, rule: &str, label: &str) -> Option<String> {
    match rules.get(&(rule.to_owned(), label.to_owned())) {
        Some(Value::String(s)) => Some(s.clone()),
        None => None,
        other => panic!("{rule} {label}: {other:?}"),
    }
}

#[test]
fn the_operators_consul_policy_reads_the_config_and_secrets_and_writes_only_its_own_keys() {
    let r = rules("nomad-jobs/acl/consul-operator.hcl");
    let p = |rule: &str, label: &str| policy(&r, rule, label);
    assert_eq!(p("key", "proxy-operator/config").as_deref(), Some("read"));
    for key in [
        "proxy-operator/status",
        "proxy-operator/rollout",
        "proxy-operator/leader",
    ] {
        assert_eq!(p("key", key).as_deref(), Some("write"), "{key}");
    }
    for prefix in ["proxy-operator/traefik/", "proxy-operator/revisions/"] {
        assert_eq!(
            p("key_prefix", prefix).as_deref(),
            Some("write"),
            "{prefix}"
        );
    }
    assert_eq!(
        p("key_prefix", "proxy-operator/secrets/").as_deref(),
        Some("read")
    );
    assert_eq!(p("session_prefix", "").as_deref(), Some("write"));
    // Every write is a key or a tree of ours; nothing broader.
    for ((rule, label), value) in &r {
        if *value == Value::from("write") {
            assert!(
                rule == "session_prefix"
                    || (rule.starts_with("key") && label.starts_with("proxy-operator/")),
                "{rule} {label:?} grants write"
            );
        }
        assert_ne!(*value, Value::from("deny"));
    }
    assert_eq!(p("key_prefix", ""), None);
    assert_eq!(p("key_prefix", "proxy-operator/"), None);
}

#[test]
fn the_operators_nomad_policy_submits_and_reads_jobs_in_the_namespace_and_reads_nodes() {
    let r = rules("nomad-jobs/acl/nomad-operator.hcl");
    assert_eq!(
        r.get(&("namespace".to_owned(), "default".to_owned())),
        Some(&Value::Array(vec![
            Value::from("list-jobs"),
            Value::from("read-job"),
            Value::from("submit-job")
        ]))
    );
    assert_eq!(policy(&r, "node", "").as_deref(), Some("read"));
    assert_eq!(r.len(), 2);
}

#[test]
fn traefiks_policies_are_read_only_and_limited_to_the_catalog_and_its_kv_tree() {
    let consul = rules("nomad-jobs/acl/consul-traefik.hcl");
    assert_eq!(
        policy(&consul, "key_prefix", "proxy-operator/traefik/").as_deref(),
        Some("read")
    );
    assert_eq!(
        policy(&consul, "service_prefix", "").as_deref(),
        Some("read")
    );
    assert_eq!(policy(&consul, "node_prefix", "").as_deref(), Some("read"));
    assert!(consul.values().all(|v| *v == Value::from("read")));
    let nomad = rules("nomad-jobs/acl/nomad-traefik.hcl");
    assert_eq!(
        nomad.get(&("namespace".to_owned(), "default".to_owned())),
        Some(&Value::Array(vec![Value::from("read-job")]))
    );
    assert_eq!(nomad.len(), 1);
}
