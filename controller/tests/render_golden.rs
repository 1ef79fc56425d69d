//! Golden files: every example document (`nomad-jobs/examples/*.yaml`) and every input in
//! `tests/golden/input/` renders, as the loop renders it (`proxy::render`, through the proxy's
//! driver), to exactly the checked-in job JSON, Traefik static YAML, KV list (Traefik's policy
//! tree, Caddy's policy key) and Caddy bootstrap JSON. `UPDATE_GOLDEN=1 cargo test -p proxy-operator --test render_golden`
//! rewrites them; review the diff like code.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

mod render_common;

use std::path::PathBuf;

use proxy_operator::proxy;
use proxy_operator::render::{self, RenderContext, Rendered};
use proxy_operator::spec;
use render_common::*;
use serde_json::Value;

/// The basic-auth users the golden renders resolve `usersFrom` to (password `secret`).
fn test_users() -> Vec<String> {
    vec!["user:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/".to_string()]
}

fn inputs() -> Vec<(String, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for (prefix, dir) in [
        ("example-", root.join("../nomad-jobs/examples")),
        ("", root.join("tests/golden/input")),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if ["yaml", "yml", "json"].contains(&ext) {
                let stem = path.file_stem().unwrap().to_string_lossy().to_string();
                found.push((format!("{prefix}{stem}"), path));
            }
        }
    }
    found.sort();
    assert!(found.len() >= 3, "expected golden inputs, found {found:?}");
    found
}

/// The policy root of the default prefix, as the loop has it.
const KV_ROOT: &str = "proxy-operator/traefik/";

fn render_input(path: &PathBuf) -> (spec::ValidatedSpec, Rendered) {
    let bytes = std::fs::read(path).unwrap();
    let validated = spec::load(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Caddy takes bcrypt only (password `secret` too).
    let users = match validated.proxy() {
        spec::ProxyKind::Caddy => {
            vec!["user:$2a$04$N34jSI.C5TeYW9uLCeGZN.5Ckg.IPT4vdI5ft9vdE7gb0EZ/UPLVi".to_string()]
        }
        spec::ProxyKind::Traefik => test_users(),
    };
    let ctx = RenderContext::default().with_unresolved_users(&validated, &users);
    let rendered = proxy::render(&validated, &ctx, KV_ROOT)
        .unwrap_or_else(|e| panic!("{}: render failed: {e}", path.display()));
    (validated, rendered)
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    s
}

#[test]
fn every_input_renders_exactly_its_golden_files() {
    let mut failures = Vec::new();
    for (name, path) in inputs() {
        let (_, r) = render_input(&path);
        let dir = golden_dir().join(&name);
        let mut artefacts = vec![("job.json", pretty(&r.job))];
        if let Some(yaml) = &r.traefik_static {
            artefacts.push(("traefik.yml", yaml.clone()));
        }
        if r.traefik_static.is_some() || !r.traefik_kv.is_empty() {
            let kv: String = r
                .traefik_kv
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            artefacts.push(("kv.txt", kv));
        }
        if let Some(caddy) = &r.caddy {
            artefacts.push(("caddy.json", pretty(caddy)));
        }
        artefacts.push((
            "digests.txt",
            format!(
                "job_digest = {}\nkv_digest = {}\n",
                r.job_digest, r.kv_digest
            ),
        ));
        for (file, actual) in artefacts {
            if let Err(diff) = check_golden(&dir.join(file), &actual) {
                failures.push(format!("{name}/{file}: {diff}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_rendered_example_job_passes_the_nomad_field_guard() {
    let api = nomad_api_types();
    for (name, path) in inputs() {
        let (_, r) = render_input(&path);
        let errors = check_against_nomad_api(&api, &r.job, "Job", "Job");
        assert!(errors.is_empty(), "{name}: {}", errors.join("\n"));
    }
}

#[test]
fn the_job_stamps_owner_and_a_digest_of_itself_without_the_digest() {
    for (name, path) in inputs() {
        let (_, r) = render_input(&path);
        assert_eq!(
            r.job["Meta"][render::META_OWNER],
            "proxy-operator",
            "{name}"
        );
        assert_eq!(
            render::job_digest_of(&r.job),
            Some(r.job_digest.as_str()),
            "{name}"
        );
        let mut unstamped = r.job.clone();
        unstamped["Meta"]
            .as_object_mut()
            .unwrap()
            .remove(render::META_SPEC_DIGEST);
        assert_eq!(render::digest_json(&unstamped), r.job_digest, "{name}");
    }
}

#[test]
fn the_proxy_config_travels_in_the_job_as_a_literal_template() {
    for (name, path) in inputs() {
        let (spec, r) = render_input(&path);
        let tmpl = &r.job["TaskGroups"][0]["Tasks"][0]["Templates"][0];
        let data = tmpl["EmbeddedTmpl"].as_str().unwrap();
        match (&r.traefik_static, &r.caddy) {
            (Some(yaml), None) => assert_eq!(data, yaml, "{name}"),
            (None, Some(caddy)) => {
                assert_eq!(
                    &serde_json::from_str::<Value>(data).unwrap(),
                    caddy,
                    "{name}"
                )
            }
            other => panic!("{name}: unexpected artefacts {other:?}"),
        }
        // Nomad evaluates only its delimiters; the default `{{` must not be the delimiter when
        // the data holds Traefik's own `{{ normalize .Name }}`. The one action allowed is the
        // Nomad token's, with `spec.job.tokens`.
        let left = tmpl["LeftDelim"].as_str().unwrap();
        assert_ne!(left, "{{", "{name}");
        let literal = match &spec.model().job.tokens {
            Some(source) => {
                let action = render::nomad_job::nomad_token_action(source);
                assert_eq!(data.matches(&action).count(), 1, "{name}: {data}");
                data.replace(&action, "")
            }
            None => data.to_string(),
        };
        assert!(
            !literal.contains(left),
            "{name}: data contains the template delimiter"
        );
        assert_eq!(tmpl["ChangeMode"], "restart", "{name}");
    }
}

#[test]
fn policy_changes_touch_only_the_kv_digest_and_structural_changes_the_job_digest() {
    let path = golden_dir().join("input/traefik-nomad-full.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (_, base) = render_input(&path);

    let policy = text.replace("average: 100", "average: 7");
    let (job_same, kv_changed) = digests_of(&policy);
    assert_eq!(
        job_same, base.job_digest,
        "a rate limit change must not restart the proxy"
    );
    assert_ne!(kv_changed, base.kv_digest);

    let structural = text.replace("memoryMB: 512", "memoryMB: 640");
    let (job_changed, kv_same) = digests_of(&structural);
    assert_ne!(job_changed, base.job_digest);
    assert_eq!(kv_same, base.kv_digest);
}

fn digests_of(doc: &str) -> (String, String) {
    let validated = spec::load(doc.as_bytes()).unwrap();
    let ctx = RenderContext {
        basic_auth_users: Some(test_users()),
        ..RenderContext::default()
    };
    let r = proxy::render(&validated, &ctx, KV_ROOT).unwrap();
    (r.job_digest, r.kv_digest)
}

#[test]
fn basic_auth_without_resolved_users_fails_naming_the_reference_not_a_secret() {
    let path = golden_dir().join("input/traefik-nomad-full.yaml");
    let validated = spec::load(&std::fs::read(&path).unwrap()).unwrap();
    let err = proxy::render(&validated, &RenderContext::default(), KV_ROOT).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("proxy-operator/secrets/basic-auth"), "{text}");
}

#[test]
fn secrets_never_show_in_debug_output_of_the_rendered_artefacts() {
    let path = golden_dir().join("input/traefik-nomad-full.yaml");
    let (_, r) = render_input(&path);
    let hash = "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/";
    assert!(
        r.traefik_kv.iter().any(|(_, v)| v.contains(hash)),
        "KV carries the users"
    );
    assert!(!format!("{r:?}").contains(hash));
    let ctx = RenderContext {
        basic_auth_users: Some(test_users()),
        ..RenderContext::default()
    };
    assert!(!format!("{ctx:?}").contains(hash));
}

#[test]
fn docker_jobs_name_the_proxy_binary_because_the_caddy_image_has_no_entrypoint() {
    let mut docker = 0;
    for (name, path) in inputs() {
        let (_, r) = render_input(&path);
        let task = &r.job["TaskGroups"][0]["Tasks"][0];
        if task["Driver"] != "docker" {
            continue;
        }
        docker += 1;
        let proxy = r.job["Meta"][render::META_PROXY].as_str().unwrap();
        assert_eq!(task["Config"]["command"], proxy, "{name}");
        let args = task["Config"]["args"].as_array().unwrap();
        assert_ne!(args[0], proxy, "{name}: the binary is not repeated in args");
    }
    assert!(docker >= 2, "expected docker examples of both proxies");
}
