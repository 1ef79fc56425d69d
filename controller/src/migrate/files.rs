//! Job files: HCL edited in place (comments and formatting kept, through `hcl-edit`), JSON jobs
//! (`{"Job": {...}}` or a bare Job, Nomad's Go field names) rewritten.
//!
//! Pure: text in, text out. Reading, diffing and atomic writes are the CLI's job.
//!
//! HCL tags may be templates (`"https://${var.HOST}"`). Interpolations are kept: each one becomes
//! an opaque placeholder while converting and is written back verbatim, so the Traefik tags carry
//! the same `${...}` the legacy tag did and Nomad resolves both the same way.

use std::fmt::Write as _;

use hcl_edit::expr::{Array, Expression};
use hcl_edit::repr::{Decorate, Span};
use hcl_edit::structure::{Block, Body};
use hcl_edit::template::Element;

use super::{
    ConvertOptions, Finding, PLACEHOLDER_CLOSE, PLACEHOLDER_OPEN, ServiceInput, ServiceMigration,
    is_legacy_tag, migrate_service,
};

/// Errors reading a job file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HCL does not parse.
    #[error("failed to parse HCL at line {line}, column {column}: {message}")]
    ParseHcl {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The JSON does not parse.
    #[error("failed to parse JSON at line {line}, column {column}: {source}")]
    ParseJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON is not a Nomad job.
    #[error("failed to find a Nomad job: {0}")]
    NotAJob(String),
    /// The JSON could not be written back.
    #[error("failed to encode JSON: {0}")]
    EncodeJson(#[source] serde_json::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A job file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Nomad HCL2 jobspec.
    Hcl,
    /// Nomad JSON job (API format).
    Json,
}

impl Format {
    /// The format a file name implies: `.json` is JSON, everything else HCL.
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Hcl,
        }
    }
}

/// One service block and what migrating it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReport {
    /// Where it is: `job "x" > group "g" > task "t" > service "name"`.
    pub location: String,
    /// The service name (as written, interpolations included).
    pub name: String,
    /// The migration.
    pub migration: ServiceMigration,
}

/// The outcome of migrating one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMigration {
    /// The new text (equal to the input when nothing changes).
    pub updated: String,
    /// Per service block with legacy tags or findings.
    pub services: Vec<ServiceReport>,
    /// Problems that concern no single tag (tags not a literal list, ...).
    pub findings: Vec<Finding>,
}

impl FileMigration {
    /// Whether the file changes.
    pub fn is_change(&self) -> bool {
        self.services.iter().any(|s| s.migration.is_change())
    }
}

/// Migrates the job text in `format`.
pub fn migrate_text(
    text: &str,
    format: Format,
    options: &ConvertOptions,
    remove_legacy: bool,
) -> Result<FileMigration> {
    match format {
        Format::Hcl => migrate_hcl(text, options, remove_legacy),
        Format::Json => migrate_json(text, options, remove_legacy),
    }
}

// === Placeholders ===

fn encode_placeholder(source: &str) -> String {
    let mut out = String::with_capacity(source.len() * 2 + 6);
    out.push(PLACEHOLDER_OPEN);
    for b in source.as_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out.push(PLACEHOLDER_CLOSE);
    out
}

fn decode_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Writes a tag (with placeholders) as the inside of an HCL quoted template.
fn hcl_template_text(tag: &str) -> Option<String> {
    let mut out = String::with_capacity(tag.len() + 8);
    let mut rest = tag;
    while let Some(start) = rest.find(PLACEHOLDER_OPEN) {
        escape_hcl_literal(&rest[..start], &mut out);
        let after = &rest[start + PLACEHOLDER_OPEN.len_utf8()..];
        let end = after.find(PLACEHOLDER_CLOSE)?;
        out.push_str("${");
        out.push_str(&decode_hex(&after[..end])?);
        out.push('}');
        rest = &after[end + PLACEHOLDER_CLOSE.len_utf8()..];
    }
    escape_hcl_literal(rest, &mut out);
    Some(out)
}

fn escape_hcl_literal(s: &str, out: &mut String) {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("$$"),
            '%' if chars.peek() == Some(&'{') => out.push_str("%%"),
            c => out.push(c),
        }
    }
}

/// The tag text of one array element: literals as is, interpolations as placeholders. `None` for
/// anything that is not a string (a variable, a directive, a function call).
fn element_text(expr: &Expression) -> Option<String> {
    match expr {
        Expression::String(s) => Some(s.value().to_string()),
        Expression::StringTemplate(t) => {
            let mut out = String::new();
            for el in t.iter() {
                match el {
                    Element::Literal(l) => out.push_str(l.value()),
                    Element::Interpolation(i) => {
                        let mut e = i.expr.clone();
                        e.decor_mut().clear();
                        out.push_str(&encode_placeholder(e.to_string().trim()));
                    }
                    Element::Directive(_) => return None,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

fn hcl_expr(tag: &str) -> Option<Expression> {
    if !tag.contains(PLACEHOLDER_OPEN) {
        // A plain string: the encoder escapes `${`, `%{`, quotes and backslashes itself, and
        // skipping the parser halves the cost of a file.
        return Some(Expression::from(tag));
    }
    let text = hcl_template_text(tag)?;
    hcl_edit::parser::parse_expr(&format!("\"{text}\"")).ok()
}

/// Output text of a tag for reports: placeholders shown as `${...}` again.
pub fn display_tag(tag: &str) -> String {
    if !tag.contains(PLACEHOLDER_OPEN) {
        return tag.to_string();
    }
    let mut out = String::new();
    let mut rest = tag;
    while let Some(start) = rest.find(PLACEHOLDER_OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + PLACEHOLDER_OPEN.len_utf8()..];
        let Some(end) = after.find(PLACEHOLDER_CLOSE) else {
            break;
        };
        out.push_str("${");
        out.push_str(&decode_hex(&after[..end]).unwrap_or_default());
        out.push('}');
        rest = &after[end + PLACEHOLDER_CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    out
}

fn display_finding(f: &Finding) -> Finding {
    Finding {
        tag: display_tag(&f.tag),
        option: display_tag(&f.option),
        reason: f.reason.clone(),
    }
}

fn display_migration(m: ServiceMigration) -> ServiceMigration {
    ServiceMigration {
        add: m.add.iter().map(|t| display_tag(t)).collect(),
        remove: m.remove.iter().map(|t| display_tag(t)).collect(),
        findings: m.findings.iter().map(display_finding).collect(),
        already_converted: m.already_converted,
    }
}

// === HCL ===

fn label(block: &Block) -> String {
    block
        .labels
        .first()
        .map(|l| l.as_str().to_string())
        .unwrap_or_default()
}

/// Where a decor string (whitespace and comments only) breaks lines outside block comments, and
/// whether its end is still inside a `#` or `//` comment.
///
/// Splitting decor at a raw `\n` would cut a multi-line `/* */` comment in half, and gluing text
/// after an unterminated line comment puts that text (or the closing `]`) inside the comment.
struct DecorScan {
    breaks: Vec<usize>,
    open_line_comment: bool,
}

fn scan_decor(s: &str) -> DecorScan {
    let bytes = s.as_bytes();
    let mut breaks = Vec::new();
    let mut in_line_comment = false;
    let mut i = 0;
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        match bytes[i] {
            b'\n' => {
                breaks.push(i);
                in_line_comment = false;
                i += 1;
            }
            _ if in_line_comment => i += 1,
            b'#' => {
                in_line_comment = true;
                i += 1;
            }
            b'/' if next == Some(b'/') => {
                in_line_comment = true;
                i += 2;
            }
            b'/' if next == Some(b'*') => {
                i = match s.get(i + 2..).and_then(|rest| rest.find("*/")) {
                    Some(end) => i + 2 + end + 2,
                    None => bytes.len(),
                };
            }
            _ => i += 1,
        }
    }
    DecorScan {
        breaks,
        open_line_comment: in_line_comment,
    }
}

/// The first line break outside a block comment: what comes before it ends the previous line.
fn first_break(s: &str) -> Option<usize> {
    scan_decor(s).breaks.first().copied()
}

/// The indentation after the last line break outside a block comment.
fn indent_after_last_break(s: &str) -> Option<String> {
    let last = *scan_decor(s).breaks.last()?;
    Some(
        s.get(last + 1..)
            .unwrap_or("")
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect(),
    )
}

fn decor_prefix(e: &Expression) -> String {
    e.decor()
        .prefix()
        .map(|p| p.to_string())
        .unwrap_or_default()
}

fn decor_suffix(e: &Expression) -> String {
    e.decor()
        .suffix()
        .map(|p| p.to_string())
        .unwrap_or_default()
}

/// Ends an unterminated line comment at the end of `s` with a line break and `indent`, so whatever
/// follows (an element, a comma, the `]`) stays code.
fn close_line_comment(s: String, indent: &str) -> String {
    if scan_decor(&s).open_line_comment {
        format!("{s}\n{indent}")
    } else {
        s
    }
}

/// Removes the elements of a tags array whose text is in `remove`. A comment ending the line before
/// a removed element stays; comments on the removed element's own line go with it.
fn remove_elements(arr: &mut Array, remove: &[String], attr_indent: &str) {
    let mut i = 0;
    while i < arr.len() {
        let is_removed = arr
            .get(i)
            .and_then(element_text)
            .is_some_and(|t| remove.contains(&t));
        if !is_removed {
            i += 1;
            continue;
        }
        let removed = arr.remove(i);
        let prefix = decor_prefix(&removed);
        // Up to its first line break, the removed element's prefix ends the previous line (that
        // line's comment, possibly a `#` comment whose line break is cut off here).
        let head = first_break(&prefix)
            .and_then(|n| prefix.get(..n))
            .unwrap_or(&prefix)
            .to_string();
        if let Some(next) = arr.get_mut(i) {
            let old = decor_prefix(next);
            let joined = match first_break(&old) {
                // The next element's prefix up to its line break ends the removed element's line
                // (that line's comment): it goes.
                Some(n) => format!("{head}{}", old.get(n..).unwrap_or("")),
                // The next element shared the removed one's line: it takes the removed one's
                // place, line break and indentation included.
                None => prefix.clone(),
            };
            next.decor_mut().set_prefix(joined);
        } else {
            let old = arr.trailing().to_string();
            let joined = match first_break(&old) {
                Some(n) => format!("{head}{}", old.get(n..).unwrap_or("")),
                // `"x"]` on the removed element's line: the `]` must not join the previous line's
                // comment.
                None => close_line_comment(head, attr_indent),
            };
            arr.set_trailing(joined);
        }
    }
    if arr.is_empty() {
        arr.set_trailing_comma(false);
    }
}

/// Adds and removes elements of a tags array, keeping its layout and every comment not on a removed
/// element's line: new elements go one per line with the indentation of the existing ones, a
/// comment trailing the old last element stays on its line, and a `#`/`//` comment is always
/// followed by a line break, so neither new tags nor the `]` end up inside it.
fn edit_array(arr: &mut Array, remove: &[String], add: &[String], attr_indent: &str) -> bool {
    remove_elements(arr, remove, attr_indent);
    if add.is_empty() {
        return true;
    }
    let has_break = |s: &str| first_break(s).is_some();
    let multiline = has_break(arr.trailing())
        || arr
            .iter()
            .any(|e| has_break(&decor_prefix(e)) || has_break(&decor_suffix(e)));
    if !multiline {
        // A one-line list would become unreadable with a dozen Traefik tags: one tag per line.
        // Block comments (the only comments a one-line list can hold) move along.
        let inner = format!("\n{attr_indent}  ");
        for e in arr.iter_mut() {
            let prefix = format!("{inner}{}", decor_prefix(e).trim_start());
            let suffix = decor_suffix(e).trim_end().to_string();
            e.decor_mut().set_prefix(prefix);
            e.decor_mut().set_suffix(suffix);
        }
        let trailing = arr.trailing().trim_end().to_string();
        arr.set_trailing(format!("{trailing}\n{attr_indent}"));
        arr.set_trailing_comma(true);
    }
    // Without a trailing comma, the text between the last element and `]` (a same-line comment,
    // the line break) is that element's suffix; the new elements and their commas go after it.
    if !arr.trailing_comma()
        && let Some(last) = arr.len().checked_sub(1).and_then(|i| arr.get_mut(i))
    {
        let suffix = decor_suffix(last);
        if !suffix.is_empty() {
            last.decor_mut().set_suffix("");
            let trailing = format!("{suffix}{}", &**arr.trailing());
            arr.set_trailing(trailing);
        }
    }
    // Elements sharing a line (`"a", "b",`) have no line break in their prefix: take the
    // indentation of the nearest element that starts a line.
    let indent = arr
        .iter()
        .filter_map(|e| indent_after_last_break(&decor_prefix(e)))
        .last()
        .unwrap_or_else(|| format!("{attr_indent}  "));
    let new_line = format!("\n{indent}");
    // A same-line comment after the old last element sits in the array's trailing text, up to its
    // line break: it stays on that line, before the first new element.
    let trailing = arr.trailing().to_string();
    let (trail_head, trail_rest) = match first_break(&trailing) {
        Some(n) => (
            trailing.get(..n).unwrap_or("").to_string(),
            trailing.get(n..).unwrap_or("").to_string(),
        ),
        None => (String::new(), trailing.clone()),
    };
    for (k, tag) in add.iter().enumerate() {
        let Some(mut expr) = hcl_expr(tag) else {
            return false;
        };
        let prefix = if k == 0 {
            format!("{trail_head}{new_line}")
        } else {
            new_line.clone()
        };
        expr.decor_mut().set_prefix(prefix);
        expr.decor_mut().set_suffix("");
        arr.push(expr);
    }
    arr.set_trailing(trail_rest);
    // Every decor built above ends a line comment with a line break; this keeps it that way for
    // layouts not foreseen (a `#` comment between an element and its comma, say).
    // Only decor that changes is set: an unset prefix prints as the encoder's default space.
    for e in arr.iter_mut() {
        let prefix = decor_prefix(e);
        if scan_decor(&prefix).open_line_comment {
            e.decor_mut()
                .set_prefix(close_line_comment(prefix, &indent));
        }
        let suffix = decor_suffix(e);
        if scan_decor(&suffix).open_line_comment {
            e.decor_mut()
                .set_suffix(close_line_comment(suffix, &indent));
        }
    }
    let trailing = arr.trailing().to_string();
    if scan_decor(&trailing).open_line_comment {
        arr.set_trailing(close_line_comment(trailing, attr_indent));
    }
    true
}

fn hcl_port(body: &Body) -> Option<u16> {
    match &body.get_attribute("port")?.value {
        Expression::Number(n) => n.value().as_u64().and_then(|n| u16::try_from(n).ok()),
        Expression::String(s) => s.value().parse().ok(),
        _ => None,
    }
}

struct Walk<'a> {
    text: &'a str,
    options: &'a ConvertOptions,
    remove_legacy: bool,
    services: Vec<ServiceReport>,
    findings: Vec<Finding>,
}

impl Walk<'_> {
    fn service(&mut self, block: &mut Block, location: String, default_name: String) {
        let name = block
            .body
            .get_attribute("name")
            .and_then(|a| element_text(&a.value))
            .unwrap_or(default_name);
        let port = hcl_port(&block.body);
        let display_name = display_tag(&name);
        let location = format!("{location} > service \"{display_name}\"");
        if let Some(canary) = block.body.get_attribute("canary_tags")
            && let Expression::Array(a) = &canary.value
            && a.iter().filter_map(element_text).any(|t| is_legacy_tag(&t))
        {
            self.findings.push(Finding::new(
                &location,
                "canary_tags",
                "legacy canary tags are not converted: Traefik's Consul Catalog provider merges every instance of a service into one Traefik service, so a canary-only router cannot be expressed; convert by hand",
            ));
        }
        let attr_indent = block
            .body
            .get_attribute("tags")
            .and_then(|a| a.span())
            .map(|span| {
                let before = self.text.get(..span.start).unwrap_or("");
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                self.text
                    .get(line_start..)
                    .unwrap_or("")
                    .chars()
                    .take_while(|c| *c == ' ' || *c == '\t')
                    .collect::<String>()
            })
            .unwrap_or_default();
        let Some(mut attr) = block.body.get_attribute_mut("tags") else {
            return;
        };
        let Expression::Array(arr) = attr.value_mut() else {
            self.findings.push(Finding::new(
                &location,
                "tags",
                "tags is not a literal list (a variable, function or for expression); convert by hand",
            ));
            return;
        };
        let mut tags = Vec::new();
        for e in arr.iter() {
            match element_text(e) {
                Some(t) => tags.push(t),
                None => {
                    self.findings.push(Finding::new(
                        &location,
                        e.to_string().trim(),
                        "tag is not a string or contains a template directive; left as is",
                    ));
                }
            }
        }
        if !tags.iter().any(|t| is_legacy_tag(t)) {
            return;
        }
        let migration = migrate_service(
            ServiceInput {
                name: &name,
                tags: &tags,
                port,
            },
            self.options,
            self.remove_legacy,
        );
        if migration.is_change()
            && !edit_array(arr, &migration.remove, &migration.add, &attr_indent)
        {
            self.findings.push(Finding::new(
                &location,
                "tags",
                "a converted tag could not be written as HCL; left as is",
            ));
            return;
        }
        self.services.push(ServiceReport {
            location,
            name: display_name,
            migration: display_migration(migration),
        });
    }
}

/// Migrates an HCL jobspec in place. Only the tag lists change; everything else stays byte for byte.
pub fn migrate_hcl(
    text: &str,
    options: &ConvertOptions,
    remove_legacy: bool,
) -> Result<FileMigration> {
    let mut body = hcl_edit::parser::parse_body(text).map_err(|e| Error::ParseHcl {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_string(),
    })?;
    let mut walk = Walk {
        text,
        options,
        remove_legacy,
        services: Vec::new(),
        findings: Vec::new(),
    };
    for job in body.get_blocks_mut("job") {
        let job_name = label(job);
        for group in job.body.get_blocks_mut("group") {
            let group_name = label(group);
            let at = format!("job \"{job_name}\" > group \"{group_name}\"");
            for service in group.body.get_blocks_mut("service") {
                walk.service(service, at.clone(), format!("{job_name}-{group_name}"));
            }
            for task in group.body.get_blocks_mut("task") {
                let task_name = label(task);
                for service in task.body.get_blocks_mut("service") {
                    walk.service(
                        service,
                        format!("{at} > task \"{task_name}\""),
                        format!("{job_name}-{group_name}-{task_name}"),
                    );
                }
            }
        }
    }
    let changed = walk.services.iter().any(|s| s.migration.is_change());
    let updated = if changed {
        body.to_string()
    } else {
        text.to_string()
    };
    Ok(FileMigration {
        updated,
        services: walk.services,
        findings: walk.findings,
    })
}

// === JSON ===

fn migrate_json_services(
    services: Option<&mut serde_json::Value>,
    location: &str,
    default_name: &str,
    options: &ConvertOptions,
    remove_legacy: bool,
    reports: &mut Vec<ServiceReport>,
    findings: &mut Vec<Finding>,
) {
    let Some(serde_json::Value::Array(list)) = services else {
        return;
    };
    for svc in list.iter_mut() {
        let name = svc
            .get("Name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or(default_name)
            .to_string();
        let location = format!("{location} > service \"{name}\"");
        let port = svc
            .get("PortLabel")
            .and_then(|p| p.as_str())
            .and_then(|p| p.parse::<u16>().ok());
        if let Some(serde_json::Value::Array(canary)) = svc.get("CanaryTags")
            && canary.iter().filter_map(|t| t.as_str()).any(is_legacy_tag)
        {
            findings.push(Finding::new(
                &location,
                "CanaryTags",
                "legacy canary tags are not converted: Traefik's Consul Catalog provider merges every instance of a service into one Traefik service, so a canary-only router cannot be expressed; convert by hand",
            ));
        }
        let Some(serde_json::Value::Array(tags)) = svc.get_mut("Tags") else {
            continue;
        };
        let strings: Vec<String> = tags
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        if !strings.iter().any(|t| is_legacy_tag(t)) {
            continue;
        }
        let migration = migrate_service(
            ServiceInput {
                name: &name,
                tags: &strings,
                port,
            },
            options,
            remove_legacy,
        );
        if migration.is_change() {
            tags.retain(|t| {
                !t.as_str()
                    .is_some_and(|s| migration.remove.iter().any(|r| r == s))
            });
            tags.extend(migration.add.iter().cloned().map(serde_json::Value::String));
        }
        reports.push(ServiceReport {
            location,
            name,
            migration,
        });
    }
}

/// Migrates a JSON job (`{"Job": {...}}` or a bare Job object). When it changes, the output is
/// pretty-printed with the input's key order.
pub fn migrate_json(
    text: &str,
    options: &ConvertOptions,
    remove_legacy: bool,
) -> Result<FileMigration> {
    let mut doc: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::ParseJson {
        line: e.line(),
        column: e.column(),
        source: e,
    })?;
    let job = if matches!(doc.get("Job"), Some(serde_json::Value::Object(_))) {
        doc.get_mut("Job")
    } else if doc.get("TaskGroups").is_some() {
        Some(&mut doc)
    } else {
        None
    }
    .ok_or_else(|| {
        Error::NotAJob("no \"Job\" object and no \"TaskGroups\" at the top level".into())
    })?;
    let job_name = job
        .get("Name")
        .or_else(|| job.get("ID"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    let mut services = Vec::new();
    let mut findings = Vec::new();
    if let Some(serde_json::Value::Array(groups)) = job.get_mut("TaskGroups") {
        for group in groups.iter_mut() {
            let group_name = group
                .get("Name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string();
            let at = format!("job \"{job_name}\" > group \"{group_name}\"");
            let group_default = format!("{job_name}-{group_name}");
            migrate_json_services(
                group.get_mut("Services"),
                &at,
                &group_default,
                options,
                remove_legacy,
                &mut services,
                &mut findings,
            );
            if let Some(serde_json::Value::Array(tasks)) = group.get_mut("Tasks") {
                for task in tasks.iter_mut() {
                    let task_name = task
                        .get("Name")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                        .to_string();
                    migrate_json_services(
                        task.get_mut("Services"),
                        &format!("{at} > task \"{task_name}\""),
                        &format!("{group_default}-{task_name}"),
                        options,
                        remove_legacy,
                        &mut services,
                        &mut findings,
                    );
                }
            }
        }
    }
    let changed = services.iter().any(|s| s.migration.is_change());
    let updated = if changed {
        let mut out = serde_json::to_string_pretty(&doc).map_err(Error::EncodeJson)?;
        out.push('\n');
        out
    } else {
        text.to_string()
    };
    Ok(FileMigration {
        updated,
        services,
        findings,
    })
}
