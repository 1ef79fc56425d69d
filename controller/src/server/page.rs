//! The status page: server-rendered HTML, one stylesheet served by the binary, a few lines of
//! script that swap in the body the event stream sends (no framework, no CDN, no web fonts).
//! Without script the page refreshes itself every 5 seconds.

use std::fmt::Write as _;

use super::{Readiness, Role, SpecSummary};
use crate::metrics::{CertificateFile, Urgency, phase_name};
use crate::spec::status::{ConditionStatus, Outcome, Phase, ProxyStatus};
use crate::spec::{ProxyKind, looks_secret};

/// What one rendering reads.
pub(super) struct Snapshot {
    pub status: Option<ProxyStatus>,
    pub ready: Readiness,
    pub role: Role,
    pub spec: Option<SpecSummary>,
    pub certs: Vec<CertificateFile>,
}

/// What replaces a string that looks like a secret.
const REDACTED: &str = "<redacted>";

/// Escapes text for HTML element content and quoted attributes; anything shaped like a secret
/// (a PEM block, a password hash) is replaced first, whatever field it turned up in.
pub(super) fn esc(text: &str) -> String {
    let text = if looks_secret(text) { REDACTED } else { text };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces every secret-looking string of a JSON value (see [`esc`]).
pub(super) fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if looks_secret(s) => *s = REDACTED.to_owned(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

fn short(digest: Option<&str>) -> String {
    digest.map_or_else(|| "-".to_owned(), |d| d.chars().take(12).collect())
}

fn phase_class(phase: Phase) -> &'static str {
    match phase {
        Phase::Ready => "ok",
        Phase::Progressing | Phase::Pending | Phase::Paused => "info",
        Phase::Degraded | Phase::Stalled => "warn",
        Phase::RolledBack | Phase::Invalid => "bad",
    }
}

/// The whole page.
pub(super) fn document(s: &Snapshot) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>proxy-operator</title>
<link rel="stylesheet" href="/style.css">
<noscript><meta http-equiv="refresh" content="5"></noscript>
</head>
<body>
<main id="live">
{live}</main>
<footer><a href="/api/status">status JSON</a> · <a href="/metrics">metrics</a> · <a href="/readyz">readiness</a> · <span id="conn">live updates off</span></footer>
<script>
(function () {{
  var conn = document.getElementById("conn");
  if (!window.EventSource) return;
  var es = new EventSource("/events");
  es.addEventListener("update", function (e) {{
    document.getElementById("live").innerHTML = e.data;
    conn.textContent = "live";
  }});
  es.onerror = function () {{ conn.textContent = "reconnecting…"; }};
}})();
</script>
</body>
</html>
"#,
        live = live(s)
    )
}

/// The part of the page that the event stream replaces.
pub(super) fn live(s: &Snapshot) -> String {
    let mut out = String::new();
    let phase = s.status.as_ref().map_or(Phase::Pending, |st| st.phase);
    let role = match s.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Unknown => "role unknown",
    };
    let _ = writeln!(
        out,
        r#"<header><h1>proxy-operator</h1><span class="badge {cls}" id="phase">{phase}</span><span class="badge">{role}</span>{ready}</header>"#,
        cls = phase_class(phase),
        phase = phase_name(phase),
        ready = if s.ready.check(s.role).is_ok() {
            ""
        } else {
            r#"<span class="badge warn">not ready</span>"#
        }
    );
    summary(&mut out, s);
    if let Some(status) = &s.status {
        conditions(&mut out, status);
        problems(&mut out, status);
        history(&mut out, status);
    }
    policies(&mut out, s.spec.as_ref());
    certificates(&mut out, &s.certs);
    out
}

fn row(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(
        out,
        "<tr><th>{}</th><td>{}</td></tr>",
        esc(name),
        esc(value)
    );
}

fn summary(out: &mut String, s: &Snapshot) {
    out.push_str("<section><h2>Summary</h2><table class=\"kv\">\n");
    let Some(st) = &s.status else {
        out.push_str("<tr><td>No status yet: the operator has not completed a pass.</td></tr></table></section>\n");
        return;
    };
    let proxy = match (st.proxy, &s.spec) {
        (Some(p), spec) => {
            let name = format!("{p:?}").to_lowercase();
            let job = st
                .job_version
                .map_or_else(String::new, |v| format!(", job version {v}"));
            let version = spec
                .as_ref()
                .filter(|sp| sp.proxy == name && !sp.version.is_empty())
                .map_or_else(String::new, |sp| format!(" {}", sp.version));
            format!("{name}{version}{job}")
        }
        (None, _) => "-".to_owned(),
    };
    row(out, "proxy", &proxy);
    // Without a holder in the status (no election ran), a leader names itself.
    let leader = match (st.leader.as_deref(), s.role) {
        (Some(holder), _) => holder,
        (None, Role::Leader) => "this replica",
        (None, _) => "-",
    };
    row(out, "leader", leader);
    row(
        out,
        "observed",
        &format!(
            "index {} · digest {}",
            st.observed_index,
            short(st.observed_digest.as_deref())
        ),
    );
    row(out, "applied", &short(st.last_applied_digest.as_deref()));
    if st.last_attempted_digest != st.last_applied_digest {
        row(
            out,
            "attempted",
            &short(st.last_attempted_digest.as_deref()),
        );
    }
    if st.failed_digest.is_some() {
        row(
            out,
            "failed",
            &format!(
                "{} (not retried until the document or retryNonce changes)",
                short(st.failed_digest.as_deref())
            ),
        );
    }
    if st.consecutive_failures > 0 {
        row(
            out,
            "failures",
            &format!(
                "{} in a row, next retry {}",
                st.consecutive_failures,
                st.next_retry_at.as_deref().unwrap_or("-")
            ),
        );
    }
    row(out, "updated", st.updated_at.as_deref().unwrap_or("-"));
    if let Some(url) = s.spec.as_ref().and_then(|sp| sp.dashboard_url.as_deref()) {
        let _ = writeln!(
            out,
            r#"<tr><th>dashboard</th><td><a href="{u}">{u}</a></td></tr>"#,
            u = esc(url)
        );
    }
    out.push_str("</table></section>\n");
}

fn conditions(out: &mut String, st: &ProxyStatus) {
    if st.conditions.is_empty() {
        return;
    }
    out.push_str("<section><h2>Conditions</h2><div class=\"scroll\"><table><tr><th>type</th><th>status</th><th>reason</th><th>message</th><th>since</th></tr>\n");
    for c in &st.conditions {
        // Not progressing is the resting state, not a failure: only the other conditions are
        // good when true and bad when false.
        let cls = match (c.condition_type.as_str(), c.status) {
            ("Progressing", ConditionStatus::True) | (_, ConditionStatus::Unknown) => "info",
            ("Progressing", ConditionStatus::False) => "",
            (_, ConditionStatus::True) => "ok",
            (_, ConditionStatus::False) => "bad",
        };
        let _ = writeln!(
            out,
            r#"<tr><td>{}</td><td class="{cls}">{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&c.condition_type),
            c.status,
            esc(&c.reason),
            esc(&c.message),
            esc(&c.last_transition_time)
        );
    }
    out.push_str("</table></div></section>\n");
}

fn problems(out: &mut String, st: &ProxyStatus) {
    if st.validation_errors.is_empty()
        && st.warnings.is_empty()
        && st.certificate_warnings.is_empty()
    {
        return;
    }
    out.push_str("<section><h2>Errors and warnings</h2><ul>\n");
    for e in &st.validation_errors {
        let _ = writeln!(out, r#"<li class="bad">{}</li>"#, esc(&e.to_string()));
    }
    for w in &st.warnings {
        let _ = writeln!(out, r#"<li class="warn">{}</li>"#, esc(&w.to_string()));
    }
    for w in &st.certificate_warnings {
        let _ = writeln!(
            out,
            r#"<li class="warn">{}: {}</li>"#,
            w.kind.as_str(),
            esc(&w.message)
        );
    }
    out.push_str("</ul></section>\n");
}

fn history(out: &mut String, st: &ProxyStatus) {
    if st.history.is_empty() {
        return;
    }
    out.push_str("<section id=\"history\"><h2>Rollouts</h2><div class=\"scroll\"><table><tr><th>started</th><th>proxy</th><th>digest</th><th>outcome</th><th>took</th><th>reason</th></tr>\n");
    for h in st.history.iter().rev() {
        let cls = match h.outcome {
            Outcome::Succeeded => "ok",
            Outcome::Held => "warn",
            Outcome::RolledBack | Outcome::Failed => "bad",
        };
        let _ = writeln!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class="{cls}">{}</td><td>{:.1} s</td><td>{}</td></tr>"#,
            esc(&h.started_at),
            h.proxy.map_or("", ProxyKind::as_str),
            esc(&short(Some(&h.digest))),
            crate::metrics::outcome_name(h.outcome),
            seconds(h.duration_ms),
            esc(&h.reason)
        );
    }
    out.push_str("</table></div></section>\n");
}

/// Milliseconds as seconds for display; rollouts last far less than f64's exact-integer range.
#[allow(clippy::cast_precision_loss)]
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn policies(out: &mut String, spec: Option<&SpecSummary>) {
    let Some(spec) = spec else { return };
    out.push_str("<section><h2>Policies</h2><ul>\n");
    if spec.policies.is_empty() {
        out.push_str("<li>none</li>\n");
    }
    for p in &spec.policies {
        let _ = writeln!(out, "<li>{}</li>", esc(p));
    }
    out.push_str("</ul></section>\n");
}

fn certificates(out: &mut String, files: &[CertificateFile]) {
    if files.is_empty() {
        return;
    }
    let now = crate::metrics::unix_now();
    out.push_str("<section><h2>Certificates</h2><div class=\"scroll\"><table><tr><th>file</th><th>subject</th><th>expires</th><th>days left</th></tr>\n");
    for f in files {
        let file = f.path.display().to_string();
        match (&f.certificates, f.leaf()) {
            (Ok(_), Some(c)) => {
                let days = c.days_left(now);
                let cls = match c.urgency(now) {
                    Urgency::Expired | Urgency::ThisWeek => "bad",
                    Urgency::Soon => "warn",
                    Urgency::Later => "ok",
                };
                let _ = writeln!(
                    out,
                    r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="{cls}">{days}</td></tr>"#,
                    esc(&file),
                    esc(&c.subject),
                    esc(&c.not_after_rfc3339()),
                );
            }
            (Err(e), _) => {
                let _ = writeln!(
                    out,
                    r#"<tr><td>{}</td><td colspan="3" class="bad">{}</td></tr>"#,
                    esc(&file),
                    esc(e)
                );
            }
            (Ok(_), None) => {}
        }
    }
    out.push_str("</table></div></section>\n");
}

/// The stylesheet: system fonts, readable from 320 px up, light and dark.
pub(super) const CSS: &str = r"
:root { --fg:#1b1f24; --bg:#fff; --muted:#59636e; --line:#d1d9e0; --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; --info:#0969da; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6edf3; --bg:#0d1117; --muted:#9198a1; --line:#30363d; --ok:#3fb950; --bad:#f85149; --warn:#d29922; --info:#4493f8; } }
* { box-sizing: border-box; }
body { margin:0 auto; max-width:60rem; padding:1rem; font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; align-items:center; gap:.5rem; }
h1 { font-size:1.3rem; margin:0 .5rem 0 0; }
h2 { font-size:1.05rem; margin:1.4rem 0 .4rem; }
.badge { border:1px solid var(--line); border-radius:1rem; padding:.1rem .6rem; font-weight:600; }
.badge.ok { color:var(--ok); border-color:var(--ok); } .badge.bad { color:var(--bad); border-color:var(--bad); }
.badge.warn { color:var(--warn); border-color:var(--warn); } .badge.info { color:var(--info); border-color:var(--info); }
td.ok, li.ok { color:var(--ok); } td.bad, li.bad { color:var(--bad); } td.warn, li.warn { color:var(--warn); } td.info { color:var(--info); }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; vertical-align:top; padding:.3rem .5rem; border-bottom:1px solid var(--line); overflow-wrap:anywhere; }
table.kv th { width:8rem; color:var(--muted); font-weight:500; }
.scroll { overflow-x:auto; }
code { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
ul { padding-left:1.2rem; }
a { color:var(--info); }
footer { margin-top:2rem; color:var(--muted); font-size:.9rem; }
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_secret_shaped_text_is_replaced() {
        assert_eq!(esc("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(esc("user:$apr1$abc$def"), "&lt;redacted&gt;");
        let mut v = serde_json::json!({"a": ["x", "-----BEGIN PRIVATE KEY-----"]});
        redact_json(&mut v);
        assert_eq!(v["a"][1], "<redacted>");
    }

    #[test]
    fn the_page_without_a_status_says_so_and_shows_pending() {
        let s = Snapshot {
            status: None,
            ready: Readiness::default(),
            role: Role::Follower,
            spec: None,
            certs: Vec::new(),
        };
        let page = document(&s);
        assert!(page.contains("No status yet"));
        assert!(page.contains(">Pending<"));
        assert!(page.contains("follower"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external resources"
        );
    }

    #[test]
    fn certificate_warnings_are_listed_with_their_kind() {
        use crate::spec::status::{CertificateWarning, CertificateWarningKind};
        let status = ProxyStatus {
            certificate_warnings: vec![CertificateWarning {
                kind: CertificateWarningKind::CertificateExpiring,
                host: "soon.example.test".into(),
                message: "soon.example.test: expires <soon>".into(),
                ..CertificateWarning::default()
            }],
            ..ProxyStatus::default()
        };
        let mut out = String::new();
        problems(&mut out, &status);
        assert!(
            out.contains("CertificateExpiring: soon.example.test: expires &lt;soon&gt;"),
            "{out}"
        );
    }
}
