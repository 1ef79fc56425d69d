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

// === Comments around edited tag lists ===

/// Every plain string element of every `tags` list in an HCL body, at any depth.
fn hcl_tags(body: &hcl_edit::structure::Body, out: &mut Vec<String>) {
    use hcl_edit::expr::Expression;
    use hcl_edit::structure::Structure;
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) if attr.key.as_str() == "tags" => {
                if let Expression::Array(arr) = &attr.value {
                    out.extend(arr.iter().filter_map(|e| match e {
                        Expression::String(s) => Some(s.value().to_string()),
                        _ => None,
                    }));
                }
            }
            Structure::Attribute(_) => {}
            Structure::Block(block) => hcl_tags(&block.body, out),
        }
    }
}

fn parsed_tags(text: &str) -> Vec<String> {
    let body = hcl_edit::parser::parse_body(text)
        .unwrap_or_else(|e| panic!("output is not valid HCL: {e}\n{text}"));
    let mut tags = Vec::new();
    hcl_tags(&body, &mut tags);
    tags.sort();
    tags
}

/// Migrates `input` and checks what a user relies on: the output is valid HCL, its tag lists hold
/// exactly the input's tags minus the reported removals plus the reported additions, each comment
/// in `comments` is still there, a `#`/`//` comment still ends its line (nothing code-like was
/// glued after it), and migrating the output again changes nothing.
fn migrate_keeping_comments(input: &str, remove_legacy: bool, comments: &[&str]) -> String {
    let options = ConvertOptions {
        datacenter: Some("dc1".into()),
        ..ConvertOptions::default()
    };
    let first = migrate_hcl(input, &options, remove_legacy).expect("input parses");
    assert!(first.is_change(), "nothing to migrate in\n{input}");
    let mut expected = parsed_tags(input);
    for service in &first.services {
        for tag in &service.migration.remove {
            let at = expected.iter().position(|t| t == tag);
            assert!(at.is_some(), "reports removing {tag:?}, not in the input");
            expected.remove(at.unwrap_or_default());
        }
        expected.extend(service.migration.add.iter().cloned());
    }
    expected.sort();
    let out = &first.updated;
    assert_eq!(
        parsed_tags(out),
        expected,
        "the output's tags are not the reported ones\n--- input ---\n{input}\n--- output ---\n{out}"
    );
    for comment in comments {
        assert!(
            out.contains(comment),
            "comment {comment:?} lost\n--- output ---\n{out}"
        );
        if comment.starts_with('#') || comment.starts_with("//") {
            assert!(
                out.lines().any(|l| l.trim_end().ends_with(comment)),
                "line comment {comment:?} no longer ends its line\n--- output ---\n{out}"
            );
        }
    }
    let second = migrate_hcl(out, &options, remove_legacy).expect("output migrates again");
    assert!(
        !second.is_change(),
        "migrating again changes the file\n--- first ---\n{out}\n--- second ---\n{}",
        second.updated
    );
    assert_eq!(&second.updated, out);
    first.updated
}

fn job_with_tags(tags: &str) -> String {
    format!(
        "job \"j\" {{\n  group \"g\" {{\n    service {{\n      tags = {tags}\n    }}\n  }}\n}}\n"
    )
}

#[test]
fn tags_added_after_a_same_line_comment_start_on_a_new_line_not_inside_the_comment() {
    // fuzz/regressions/migrate_files/same-line-comment-swallows-added-tags
    let out = migrate_keeping_comments(
        &job_with_tags("[\n        \"urlprefix-a.com/\", \"metrics\", # note\n      ]"),
        false,
        &["# note"],
    );
    assert!(
        out.contains("\"metrics\", # note\n        \"traefik.enable=true\","),
        "{out}"
    );
    // ...-min: a `//` comment after elements sharing the first line, and a non-string element.
    migrate_keeping_comments(
        "job{\ngroup{\nservice{\ntags=[\n\"urlprefix-4\",_,//\n]\n}\n}\n}",
        false,
        &["//"],
    );
}

#[test]
fn removing_the_last_tag_keeps_the_closing_bracket_out_of_the_previous_lines_comment() {
    // fuzz/regressions/migrate_files/remove-legacy-comment-swallows-closing-bracket
    let out = migrate_keeping_comments(
        &job_with_tags(
            "[\n        \"metrics\", # scraped by prometheus\n        \"urlprefix-a.com/\"]",
        ),
        true,
        &["# scraped by prometheus"],
    );
    assert!(!out.contains("urlprefix-"), "{out}");
    assert!(
        out.contains("\"metrics\", # scraped by prometheus\n        \"traefik.enable=true\","),
        "{out}"
    );
    // ...-min: the comment sits on the `[` line and the list becomes empty before the additions.
    migrate_keeping_comments(
        "job{\ngroup{\nservice{\ntags=[#\n\"urlprefix-p\"]\n}\n}\n}",
        true,
        &["#"],
    );
}

#[test]
fn comments_anywhere_in_a_tags_list_survive_migration_with_and_without_remove_legacy() {
    // (name, tags list, comments kept when the legacy tag is kept, comments kept when removed)
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "after the first element",
            "[\n        \"metrics\", # first\n        \"urlprefix-a.com/\",\n      ]",
            &["# first"],
            &["# first"],
        ),
        (
            "on the [ line",
            "[ # on bracket\n        \"urlprefix-a.com/\",\n        \"metrics\",\n      ]",
            &["# on bracket"],
            &["# on bracket"],
        ),
        (
            "after the legacy element, which is last and has no comma",
            "[\n        \"metrics\",\n        \"urlprefix-a.com/\" # legacy\n      ]",
            &["# legacy"],
            &[],
        ),
        (
            "between an element and its comma",
            "[\n        \"metrics\" # why\n        , \"urlprefix-a.com/\"\n      ]",
            &["# why"],
            &["# why"],
        ),
        (
            "on its own line before ]",
            "[\n        \"urlprefix-a.com/\",\n        # more to come\n      ]",
            &["# more to come"],
            &["# more to come"],
        ),
        (
            "// comments, last element without comma",
            "[\n        \"urlprefix-a.com/\", // legacy\n        \"metrics\" // last\n      ]",
            &["// legacy", "// last"],
            &["// last"],
        ),
        (
            "block comments before, after and at the end",
            "[\n        \"urlprefix-a.com/\" /* legacy */,\n        /* kept */ \"metrics\", /* end */\n      ]",
            &["/* legacy */", "/* kept */", "/* end */"],
            &["/* kept */", "/* end */"],
        ),
        (
            "a block comment spanning lines before the legacy element",
            "[\n        \"metrics\", /* spans\n        two lines */\n        \"urlprefix-a.com/\"]",
            &["/* spans\n        two lines */"],
            &["/* spans\n        two lines */"],
        ),
        (
            "a one-line list with a block comment",
            "[/* one */ \"urlprefix-a.com/\", \"metrics\" /* two */]",
            &["/* one */", "/* two */"],
            &["/* one */", "/* two */"],
        ),
        (
            "a comment line before a legacy element that shares its line with the next",
            "[\n        \"metrics\", # m\n        \"urlprefix-a.com/\", \"extra\"\n      ]",
            &["# m"],
            &["# m"],
        ),
        (
            "comment markers inside other comments",
            "[\n        \"metrics\", # see /* not a block\n        \"urlprefix-a.com/\", /* # not a line */\n      ]",
            &["# see /* not a block", "/* # not a line */"],
            &["# see /* not a block"],
        ),
    ];
    // Without a trailing comma, a comment after the old last element stays on its line, after
    // the comma the new elements need.
    let out = migrate_keeping_comments(
        &job_with_tags(
            "[\n        \"urlprefix-a.com/\", // legacy\n        \"metrics\" // last\n      ]",
        ),
        false,
        &[],
    );
    assert!(
        out.contains("\"metrics\", // last\n        \"traefik.enable=true\","),
        "{out}"
    );
    for (name, tags, kept, kept_when_removed) in cases {
        eprintln!("case: {name}");
        let input = job_with_tags(tags);
        migrate_keeping_comments(&input, false, kept);
        let out = migrate_keeping_comments(&input, true, kept_when_removed);
        assert!(!out.contains("urlprefix-"), "{name}: {out}");
    }
}

/// What separates an element from the one before it (or from `[`); `{i}` numbers the comment.
const SEPARATORS: &[&str] = &[
    "",
    " ",
    "\n        ",
    " # c{i}\n        ",
    " // c{i}\n        ",
    " /* c{i} */ ",
    " /* c{i}\n        */\n        ",
    "\n        # c{i}\n        ",
];
/// What follows an element before its comma.
const SUFFIXES: &[&str] = &["", " ", " /* s{i} */", " # s{i}\n       "];
/// What follows the last element (and its comma, if any) before `]`.
const TRAILERS: &[&str] = &[
    "",
    "\n      ",
    " # t\n      ",
    " /* t */",
    "\n        // t\n      ",
];

fn numbered(template: &str, i: usize) -> String {
    template.replace("{i}", &i.to_string())
}

fn comments_in(template: &str, i: usize) -> Option<String> {
    let text = numbered(template, i);
    let start = text.find(['#', '/'])?;
    let comment = &text[start..];
    Some(match comment.find("*/") {
        Some(end) => comment[..end + 2].to_string(),
        None => comment.trim_end().to_string(),
    })
}

proptest::proptest! {
    #[test]
    fn any_comment_placement_in_a_tags_list_keeps_the_output_valid_and_the_tags_as_reported(
        elements in proptest::collection::vec(
            (proptest::bool::ANY, 0..SEPARATORS.len(), 0..SUFFIXES.len()),
            1..5,
        ),
        trailing_comma in proptest::bool::ANY,
        trailer in 0..TRAILERS.len(),
        remove_legacy in proptest::bool::ANY,
    ) {
        // At least one legacy tag, or there is nothing to migrate.
        let none_legacy = !elements.iter().any(|(legacy, _, _)| *legacy);
        let mut list = String::from("[");
        let mut comments = Vec::new();
        for (i, (legacy, sep, suffix)) in elements.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            list.push_str(&numbered(SEPARATORS[*sep], i));
            if *legacy || (none_legacy && i == 0) {
                list.push_str(&format!("\"urlprefix-h{i}.example.com/\""));
            } else {
                list.push_str(&format!("\"m{i}\""));
            }
            list.push_str(&numbered(SUFFIXES[*suffix], i));
            comments.extend(comments_in(SEPARATORS[*sep], i));
            comments.extend(comments_in(SUFFIXES[*suffix], i));
        }
        if trailing_comma {
            list.push(',');
        }
        list.push_str(TRAILERS[trailer]);
        comments.extend(comments_in(TRAILERS[trailer], 0));
        list.push(']');
        let input = job_with_tags(&list);
        // Comments on a removed element's line go with it; without removal every one stays.
        let kept: Vec<&str> = if remove_legacy {
            Vec::new()
        } else {
            comments.iter().map(String::as_str).collect()
        };
        let out = migrate_keeping_comments(&input, remove_legacy, &kept);
        for comment in &comments {
            let line_comment = comment.starts_with('#') || comment.starts_with("//");
            if line_comment && out.contains(comment.as_str()) {
                proptest::prop_assert!(
                    out.lines().any(|l| l.trim_end().ends_with(comment.as_str())),
                    "{} no longer ends its line\n--- input ---\n{}\n--- output ---\n{}",
                    comment,
                    input,
                    out
                );
            }
        }
    }
}
