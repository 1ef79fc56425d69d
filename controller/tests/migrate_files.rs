//! Job files: HCL edited in place with comments and layout kept, JSON rewritten, and the
//! `migrate tags` command's diff, write and exit codes.
#![allow(clippy::panic)] // a failing test panics

use std::process::Command;

use proxy_operator::migrate::ConvertOptions;
use proxy_operator::migrate::files::{Error, migrate_hcl, migrate_json};

fn data(name: &str) -> String {
    format!("{}/tests/data/migrate/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(name)).expect("test data")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_proxy-operator"))
}

#[test]
fn hcl_edit_keeps_every_original_line_except_the_reflowed_one_line_list() {
    let text = read("hello-world.nomad.hcl");
    let m = migrate_hcl(&text, &ConvertOptions::default(), false).expect("parses");
    assert!(m.is_change());
    let updated: Vec<&str> = m.updated.lines().collect();
    // Every original line is still there, in order, except the one-line tags list that was
    // spread over several lines.
    let mut at = 0;
    for line in text.lines() {
        if line.trim_start().starts_with("tags = [\"https://") {
            continue;
        }
        let found = updated[at..].iter().position(|l| *l == line);
        assert!(
            found.is_some(),
            "line lost or reordered: {line:?}\n{}",
            m.updated
        );
        at += found.unwrap_or(0) + 1;
    }
    for comment in [
        "# Minimal HinD-style job",
        "# The site address HinD's Caddy serves.",
        "# the fabio-era HTTPS site",
        "// private",
    ] {
        assert!(m.updated.contains(comment), "{comment}");
    }
}

#[test]
fn hcl_interpolations_are_carried_into_the_traefik_tags_and_dollars_are_escaped() {
    let m = migrate_hcl(
        &read("hello-world.nomad.hcl"),
        &ConvertOptions::default(),
        false,
    )
    .expect("parses");
    assert!(
        m.updated
            .contains("rule=Host(`${var.CI_PROJECT_PATH_SLUG}-main.${var.BASE_DOMAIN}`)\""),
        "{}",
        m.updated
    );
    // A literal `${2}` in a redirect replacement must be written `$${2}` in HCL.
    assert!(
        m.updated
            .contains("redirectregex.replacement=https://admin.example.com$${2}$${3}\"")
    );
    assert!(
        m.updated.contains("loadbalancer.server.port=8080"),
        "numeric service port is pinned"
    );
    hcl_edit::parser::parse_body(&m.updated).expect("output is valid HCL");
}

#[test]
fn migrating_hcl_twice_changes_nothing_the_second_time() {
    let once = migrate_hcl(
        &read("hello-world.nomad.hcl"),
        &ConvertOptions::default(),
        false,
    )
    .expect("parses");
    let twice = migrate_hcl(&once.updated, &ConvertOptions::default(), false).expect("parses");
    assert!(!twice.is_change());
    assert_eq!(twice.updated, once.updated);
    assert!(twice.services.iter().all(|s| s.migration.already_converted));
}

#[test]
fn remove_legacy_after_migration_drops_legacy_tags_and_their_comments_only() {
    let once = migrate_hcl(
        &read("hello-world.nomad.hcl"),
        &ConvertOptions::default(),
        false,
    )
    .expect("parses");
    let removed = migrate_hcl(&once.updated, &ConvertOptions::default(), true).expect("parses");
    assert!(!removed.updated.contains("urlprefix-"));
    assert!(!removed.updated.contains("\"https://"));
    assert!(!removed.updated.contains("# the fabio-era HTTPS site"));
    assert!(removed.updated.contains("\"metrics\","));
    assert!(
        removed
            .updated
            .contains("# The site address HinD's Caddy serves.")
    );
    hcl_edit::parser::parse_body(&removed.updated).expect("output is valid HCL");
}

#[test]
fn unparseable_hcl_is_an_error_with_line_and_column() {
    let err = migrate_hcl(
        "job \"x\" {\n  group \"g\" {\n    tags = [\"a\",\n}\n",
        &ConvertOptions::default(),
        false,
    )
    .expect_err("broken HCL");
    let Error::ParseHcl { line, column, .. } = &err else {
        panic!("{err}")
    };
    assert!(*line >= 3, "line {line}");
    assert!(*column >= 1);
    assert!(
        err.to_string()
            .contains(&format!("line {line}, column {column}"))
    );
}

#[test]
fn computed_tag_lists_are_reported_not_guessed() {
    let m = migrate_hcl(
        &read("computed-tags.nomad.hcl"),
        &ConvertOptions::default(),
        false,
    )
    .expect("parses");
    assert!(!m.is_change());
    assert_eq!(m.findings.len(), 1);
    assert!(m.findings[0].reason.contains("not a literal list"));
}

#[test]
fn json_jobs_get_tags_in_group_and_task_services_with_nomad_default_names() {
    let m = migrate_json(&read("legacy.json"), &ConvertOptions::default(), false).expect("parses");
    let doc: serde_json::Value = serde_json::from_str(&m.updated).expect("valid JSON");
    let group_tags = doc["Job"]["TaskGroups"][0]["Services"][0]["Tags"]
        .as_array()
        .expect("tags");
    assert!(group_tags.iter().any(|t| {
        t.as_str().is_some_and(|s| {
            s.starts_with("traefik.http.routers.legacy-web-")
                && s.ends_with(".rule=Host(`legacy.example.com`)")
        })
    }));
    let task_tags = doc["Job"]["TaskGroups"][0]["Tasks"][0]["Services"][0]["Tags"]
        .as_array()
        .expect("tags");
    // The unnamed task service is named `<job>-<group>-<task>` by Nomad.
    assert!(task_tags.iter().any(|t| {
        t.as_str()
            .is_some_and(|s| s.starts_with("traefik.http.routers.legacy-web-app-"))
    }));
    assert!(
        task_tags
            .iter()
            .any(|t| t == "traefik.http.services.legacy-web-app.loadbalancer.server.port=9000")
    );
    assert!(task_tags.contains(&serde_json::json!("v1")));
    // Key order is kept.
    let keys: Vec<&String> = doc["Job"].as_object().expect("object").keys().collect();
    assert_eq!(keys, ["ID", "Name", "Type", "TaskGroups"]);
    let again = migrate_json(&m.updated, &ConvertOptions::default(), false).expect("parses");
    assert!(!again.is_change());
}

#[test]
fn bare_json_job_is_accepted_and_non_jobs_are_errors() {
    let bare = serde_json::json!({"Name": "b", "TaskGroups": [{"Name": "g", "Services": [{"Name": "s", "Tags": ["https://b.org"]}]}]});
    let m = migrate_json(&bare.to_string(), &ConvertOptions::default(), false).expect("bare job");
    assert!(m.is_change());
    assert!(matches!(
        migrate_json("{\"foo\": 1}", &ConvertOptions::default(), false),
        Err(Error::NotAJob(_))
    ));
    assert!(matches!(
        migrate_json("{\n\"Job\": ", &ConvertOptions::default(), false),
        Err(Error::ParseJson { line: 2, .. })
    ));
}

#[test]
fn command_prints_a_diff_and_exits_1_when_there_are_changes_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("job.nomad.hcl");
    std::fs::copy(data("hello-world.nomad.hcl"), &path).expect("copy");
    let before = std::fs::read_to_string(&path).expect("read");
    let out = bin()
        .args(["migrate", "tags"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("--- a/"), "{stdout}");
    assert!(stdout.contains("+          \"traefik.enable=true\","));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("redirect=308"),
        "findings go to stderr per tag: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), before);
}

#[test]
fn command_writes_atomically_then_reports_nothing_to_change_with_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hcl = dir.path().join("job.nomad.hcl");
    let json = dir.path().join("job.json");
    std::fs::copy(data("hello-world.nomad.hcl"), &hcl).expect("copy");
    std::fs::copy(data("legacy.json"), &json).expect("copy");
    let write = bin()
        .args(["migrate", "tags", "--write"])
        .arg(&hcl)
        .arg(&json)
        .output()
        .expect("run");
    assert_eq!(
        write.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    assert!(write.stdout.is_empty());
    assert!(
        std::fs::read_to_string(&hcl)
            .expect("read")
            .contains("traefik.enable=true")
    );
    assert!(
        std::fs::read_to_string(&json)
            .expect("read")
            .contains("traefik.enable=true")
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "no temporary file left behind: {leftovers:?}"
    );
    let again = bin()
        .args(["migrate", "tags"])
        .arg(&hcl)
        .arg(&json)
        .output()
        .expect("run");
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert!(again.stdout.is_empty());
}

#[test]
fn command_exits_2_on_unparseable_hcl_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.nomad.hcl");
    let text = "job \"x\" {\n  group \"g\" {\n    service { tags = [\"https://a.org\" }\n  }\n}\n";
    std::fs::write(&bad, text).expect("write");
    let good = dir.path().join("good.nomad.hcl");
    std::fs::copy(data("hello-world.nomad.hcl"), &good).expect("copy");
    let out = bin()
        .args(["migrate", "tags", "--write"])
        .arg(&bad)
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3, column"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&bad).expect("read"), text);
}
