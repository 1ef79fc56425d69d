//! `proxy-operator render` end to end: the real binary, real files, exit codes and streams.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::process::Command;

fn input(name: &str) -> String {
    format!("{}/tests/golden/input/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn render(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
        .arg("render")
        .args(args)
        .output()
        .expect("run proxy-operator")
}

#[test]
fn render_prints_the_job_static_config_and_kv_as_json_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "user:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\n").unwrap();
    let out = render(&[
        &input("traefik-nomad-full.yaml"),
        "--basic-auth-users",
        users.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["job"]["ID"], "traefik");
    assert!(
        doc["traefikStatic"]
            .as_str()
            .unwrap()
            .contains("entryPoints:")
    );
    let kv = doc["traefikKv"].as_object().unwrap();
    assert_eq!(
        kv["proxy-operator/traefik/http/middlewares/proxy-operator-policy/chain/middlewares/0"],
        "proxy-operator-headers"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("$apr1$"), "basic-auth hashes are redacted");
    assert!(stdout.contains("<redacted>"));
}

#[test]
fn render_prints_yaml_when_asked() {
    let out = render(&[&input("caddy-minimal.yaml"), "--output", "yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("job:"), "{text}");
    assert!(text.contains("caddy:"), "{text}");
}

#[test]
fn render_offline_marks_the_unread_users_placeholder_and_names_the_reference() {
    let out = render(&[&input("traefik-nomad-full.yaml")]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("placeholder:<users-not-read-offline>"),
        "the offline render must carry the marked placeholder"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy-operator/secrets/basic-auth"), "{err}");
    assert!(err.contains("--basic-auth-users"), "{err}");
}

#[test]
fn render_exits_1_with_field_errors_for_an_invalid_document() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("bad.yaml");
    std::fs::write(
        &doc,
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  entryPoints:\n    web:\n      address: \":99999\"\n",
    )
    .unwrap();
    let out = render(&[doc.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.entryPoints.web.address"));
}

#[test]
fn render_exits_2_when_the_file_cannot_be_read() {
    let out = render(&["/nonexistent/proxy.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to read"));
}

/// The policy root of the default prefix, as the loop has it.
const KV_ROOT: &str = "proxy-operator/traefik/";

/// A bcrypt hash (60 characters, as Caddy needs) no renderer or message could produce by
/// accident.
const SENTINEL_HASH: &str = "$2y$10$SENTINELsentinelSENTINELsentinelSENTINELsentinelSENTI";

#[test]
fn caddy_basic_auth_hashes_never_appear_in_render_output_or_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, format!("alice:{SENTINEL_HASH}\n")).unwrap();
    let doc = dir.path().join("caddy.yaml");
    std::fs::write(
        &doc,
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n  middlewares:\n    basicAuth:\n      usersFrom:\n        consulKey: proxy-operator/secrets/basic-auth\n",
    )
    .unwrap();
    for output in ["json", "yaml"] {
        let out = render(&[
            doc.to_str().unwrap(),
            "--basic-auth-users",
            users.to_str().unwrap(),
            "--output",
            output,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!said.contains("SENTINEL"), "{output}: {said}");
        assert!(said.contains("<redacted>"), "{output}: {said}");
    }

    // The library's job JSON (what the loop registers with Nomad) holds no hash either.
    let validated = proxy_operator::spec::load(&std::fs::read(&doc).unwrap()).unwrap();
    let ctx = proxy_operator::render::RenderContext {
        basic_auth_users: Some(vec![format!("alice:{SENTINEL_HASH}")]),
        ..Default::default()
    };
    let rendered = proxy_operator::proxy::render(&validated, &ctx, KV_ROOT).unwrap();
    let job = rendered.job.to_string();
    assert!(!job.contains("SENTINEL"), "{job}");
    assert!(!format!("{rendered:?}").contains("SENTINEL"));
    // The live config the loop loads through Caddy's admin API does carry the users.
    let model = proxy_operator::render::resolve(&validated, &ctx).unwrap();
    let live = proxy_operator::proxy::caddy::live(&model, &Default::default()).unwrap();
    assert!(String::from_utf8_lossy(&live.body).contains("SENTINEL"));

    // A hash Caddy cannot verify fails without echoing it.
    let ctx = proxy_operator::render::RenderContext {
        basic_auth_users: Some(vec!["alice:$apr1$SENTINEL$x".to_string()]),
        ..Default::default()
    };
    let err = proxy_operator::proxy::render(&validated, &ctx, KV_ROOT).unwrap_err();
    assert!(!err.to_string().contains("SENTINEL"), "{err}");
}
