//! `proxy-operator validate` and `schema` as a user runs them: exit codes, where output goes.
// Tests fail by panicking; the workspace lint is for production code.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(rel: &str) -> String {
    repo(rel).to_string_lossy().into_owned()
}

#[test]
fn validate_exits_zero_when_every_file_is_valid() {
    let out = run(&[
        "validate",
        &path("nomad-jobs/examples/caddy.yaml"),
        &path("nomad-jobs/examples/traefik-nomad-primary.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains(": valid (digest "))
            .count(),
        2,
        "{stdout}"
    );
}

#[test]
fn validate_exits_one_and_prints_file_path_and_message_on_stderr() {
    let bad = path("controller/tests/data/invalid/invalid-cidr.yaml");
    let out = run(&["validate", &path("nomad-jobs/examples/caddy.yaml"), &bad]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{bad}: spec.middlewares.ipAllowList.sourceRange[2]: \"10.0.0.300/8\" is not a CIDR"
        )),
        "{stderr}"
    );
    assert!(
        !text(&out.stdout).contains(&bad),
        "errors must not go to stdout"
    );
}

#[test]
fn validate_exits_two_when_a_file_cannot_be_read() {
    let out = run(&[
        "validate",
        "/nonexistent/config.yaml",
        &path("controller/tests/data/invalid/invalid-cidr.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/config.yaml: failed to read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_without_files_is_a_usage_error() {
    assert_eq!(run(&["validate"]).status.code(), Some(2));
}

#[test]
fn validate_json_output_reports_every_file() {
    let out = run(&[
        "validate",
        "--output",
        "json",
        &path("nomad-jobs/examples/caddy.yaml"),
        &path("controller/tests/data/invalid/unknown-field.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(reports[0]["valid"], true);
    assert_eq!(reports[0]["digest"].as_str().map(str::len), Some(64));
    assert_eq!(reports[1]["valid"], false);
    assert_eq!(
        reports[1]["errors"][0]["path"],
        "spec.entryPoints.web.adress"
    );
    assert!(
        reports[1]["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did you mean \"address\""))
    );
}

#[test]
fn validate_reads_standard_input_for_a_dash() {
    use std::io::Write;
    let mut child = bin()
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{\"apiVersion\":\"proxy-operator.io/v1alpha1\",\"kind\":\"ProxyConfig\"}")
        .expect("writes");
    let out = child.wait_with_output().expect("finishes");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn validate_refuses_oversized_files_without_reading_them_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.yaml");
    let mut doc = String::from("apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\n");
    doc.push_str(&"#".repeat(600 * 1024));
    std::fs::write(&big, doc).expect("writes");
    let out = run(&["validate", &big.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("512 KiB"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schema_writes_files_identical_to_the_checked_in_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&["schema", "--out-dir", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for name in [
        "proxyconfig.v1alpha1.schema.json",
        "proxystatus.v1alpha1.schema.json",
    ] {
        let written = std::fs::read_to_string(dir.path().join(name)).expect("written");
        let checked_in =
            std::fs::read_to_string(repo(&format!("crd-schemas/{name}"))).expect("checked in");
        assert_eq!(written, checked_in, "{name}");
    }
}

#[test]
fn validate_and_load_errors_never_echo_secret_looking_values() {
    let dir = std::env::temp_dir().join(format!("specfix-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let head =
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n";
    let docs = [
        "  middlewares:\n    basicAuth:\n      usersFrom: \"alice:$apr1$SENTINEL1$abcdefghijkl\"\n",
        "  tls:\n    certificates: [\"-----BEGIN PRIVATE KEY-----\\nSENTINEL2MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\"]\n",
        "  tls:\n    certDir: \"-----BEGIN PRIVATE KEY----- SENTINEL3\"\n",
        "  middlewares:\n    basicAuth:\n      usersFrom:\n        file: \"alice:$2y$10$SENTINEL4abcdefghijklmnopqrstuv\"\n",
        "  dashboard:\n    address: \"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7SENTINEL5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
    ];
    for (i, body) in docs.iter().enumerate() {
        let doc = format!("{head}{body}");
        let err = proxy_operator::spec::load(doc.as_bytes()).expect_err("invalid document");
        let said = format!("{err} {err:?} {:?}", err.field_errors());
        assert!(!said.contains("SENTINEL"), "doc {i}: {said}");
        let file = dir.join(format!("doc{i}.yaml"));
        std::fs::write(&file, &doc).expect("write");
        for extra in [&[][..], &["--output", "json"][..]] {
            let mut args = vec!["validate"];
            args.extend_from_slice(extra);
            let f = file.to_string_lossy().into_owned();
            args.push(&f);
            let out = run(&args);
            assert_eq!(out.status.code(), Some(1), "doc {i}");
            let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(!said.contains("SENTINEL"), "doc {i}: {said}");
            assert!(
                said.contains("spec."),
                "doc {i} still names the field: {said}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_refuses_what_the_operator_refuses_a_policy_tree_over_the_key_budget_and_tabs_in_headers()
 {
    let dir = std::env::temp_dir().join(format!("specfix-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let head = "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n  middlewares:\n    securityHeaders:\n      headers:\n";
    let many: String = (0..70)
        .map(|i| format!("        X-Custom-{i}: v\n"))
        .collect();
    let cases = [
        (
            format!("{head}{many}"),
            "spec.middlewares.securityHeaders",
            "keys",
        ),
        (
            format!("{head}        X-Tab: \"a\\tb\"\n"),
            "spec.middlewares.securityHeaders.headers.X-Tab",
            "tabs",
        ),
    ];
    for (i, (doc, field, needle)) in cases.iter().enumerate() {
        let file = dir.join(format!("doc{i}.yaml"));
        std::fs::write(&file, doc).expect("write");
        let f = file.to_string_lossy().into_owned();
        let out = run(&["validate", &f]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "case {i}: {}",
            text(&out.stdout)
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(field) && stderr.contains(needle),
            "case {i}: {stderr}"
        );
        let out = bin().args(["render", &f]).output().expect("binary runs");
        assert_eq!(out.status.code(), Some(1), "case {i}: render agrees");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_exits_quietly_with_its_verdict_when_stdout_is_closed() {
    let example = path("nomad-jobs/examples/caddy.yaml");
    let files: Vec<&str> = std::iter::repeat_n(example.as_str(), 200).collect();
    for output in ["text", "json"] {
        let mut child = bin()
            .arg("validate")
            .args(["--output", output])
            .args(&files)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary runs");
        // Close the read end before the command writes, as `| head -0` does.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("binary exits");
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{output}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{output}: {stderr}");
    }
}
