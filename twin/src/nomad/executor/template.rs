//! The subset of Nomad's `template` language (consul-template) the twin renders: `env "NAME"`,
//! and `with nomadVar "path"` … `.item` … `end` reading a Nomad Variable of the job's
//! namespace, in the template's delimiters; string arguments in `"…"` or Go raw `` `…` ``
//! quotes. Any other action is copied verbatim.
//!
//! Where the twin differs from a Nomad client: a `nomadVar` whose variable does not exist
//! blocks a real task until it is written (consul-template waits for its dependencies); the
//! twin fails the task start with a `Setup Failure` event naming the path instead. An item the
//! variable lacks fails the same way, rather than rendering an empty value. A variable written
//! after the task started does not re-render the template (no `change_mode`).

use std::collections::BTreeMap;

/// Reads a variable's items by path (the executor's lookup in the job's namespace).
pub(super) type Variables<'a> = dyn Fn(&str) -> Option<BTreeMap<String, String>> + 'a;

/// A string argument: `"…"` (no escapes are expected in paths or names) or `` `…` ``.
fn string_arg(text: &str) -> Option<&str> {
    let text = text.trim();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| text.strip_prefix('`').and_then(|t| t.strip_suffix('`')))
}

/// Renders `data`. An error names what is missing, never a value.
pub(super) fn render_template(
    data: &str,
    left: &str,
    right: &str,
    env: &BTreeMap<String, String>,
    vars: &Variables<'_>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = data;
    // The open `with` blocks: the path and items of each `nomadVar`, innermost last; `None`
    // for a `with` the twin does not evaluate (its body and `end` stay verbatim).
    let mut scopes: Vec<Option<(String, BTreeMap<String, String>)>> = Vec::new();
    while let Some(start) = rest.find(left) {
        let after = &rest[start + left.len()..];
        let Some(end) = after.find(right) else {
            break;
        };
        let raw = &rest[start..start + left.len() + end + right.len()];
        let expr = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        out.push_str(&rest[..start]);
        rest = &after[end + right.len()..];
        if let Some(name) = expr.strip_prefix("env ").and_then(string_arg) {
            out.push_str(env.get(name).map(String::as_str).unwrap_or_default());
        } else if let Some(path) = expr
            .strip_prefix("with ")
            .and_then(|e| e.trim().strip_prefix("nomadVar "))
            .and_then(string_arg)
        {
            let items = vars(path).ok_or_else(|| {
                format!("Nomad Variable {path:?} does not exist (a Nomad client waits for it; the twin fails the task)")
            })?;
            scopes.push(Some((path.to_string(), items)));
        } else if expr.starts_with("with ") {
            scopes.push(None);
            out.push_str(raw);
        } else if expr == "end" {
            match scopes.pop() {
                Some(Some(_)) => {}
                Some(None) | None => out.push_str(raw),
            }
        } else if let (Some(key), Some(Some((path, items)))) =
            (expr.strip_prefix('.'), scopes.last())
        {
            let value = items
                .get(key)
                .ok_or_else(|| format!("Nomad Variable {path:?} has no item {key:?}"))?;
            out.push_str(value);
        } else {
            out.push_str(raw);
        }
    }
    if scopes.iter().any(Option::is_some) {
        return Err("a `with nomadVar` block has no `end`".to_string());
    }
    out.push_str(rest);
    Ok(out)
}

/// The variables of an `env = true` template's output: `KEY=VALUE` lines, blank lines and `#`
/// comments skipped, an `export ` prefix and quotes around the value removed (the dotenv
/// format Nomad's `template` stanza documents).
pub(super) fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            Some((key.trim().to_string(), unquoted.to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn no_vars(_: &str) -> Option<BTreeMap<String, String>> {
        None
    }

    fn proxy_var(path: &str) -> Option<BTreeMap<String, String>> {
        (path == "nomad/jobs/proxy").then(|| {
            BTreeMap::from([
                ("consul_token".to_string(), "c-sentinel".to_string()),
                ("nomad_token".to_string(), "n-sentinel".to_string()),
            ])
        })
    }

    #[test]
    fn env_actions_substitute_and_other_actions_stay_verbatim() {
        let env = BTreeMap::from([("NOMAD_PORT_http".to_string(), "8080".to_string())]);
        let out = render_template(
            "port={{ env \"NOMAD_PORT_http\" }} {{ key \"x\" }} {{ with service \"a\" }}x{{ end }}",
            "{{",
            "}}",
            &env,
            &no_vars,
        )
        .unwrap();
        assert_eq!(
            out,
            "port=8080 {{ key \"x\" }} {{ with service \"a\" }}x{{ end }}"
        );
    }

    #[test]
    fn a_nomad_var_block_renders_its_items_in_default_and_custom_delimiters() {
        let env = BTreeMap::new();
        let out = render_template(
            "{{ with nomadVar \"nomad/jobs/proxy\" }}CONSUL_HTTP_TOKEN={{ .consul_token }}\n{{ end }}",
            "{{",
            "}}",
            &env,
            &proxy_var,
        )
        .unwrap();
        assert_eq!(out, "CONSUL_HTTP_TOKEN=c-sentinel\n");
        let out = render_template(
            "token: \"[[ with nomadVar `nomad/jobs/proxy` ]][[ .nomad_token ]][[ end ]]\"\nliteral: {{ x }}",
            "[[",
            "]]",
            &env,
            &proxy_var,
        )
        .unwrap();
        assert_eq!(out, "token: \"n-sentinel\"\nliteral: {{ x }}");
    }

    #[test]
    fn a_missing_variable_or_item_fails_naming_the_path_and_never_a_value() {
        let env = BTreeMap::new();
        let e = render_template(
            "{{ with nomadVar \"nomad/jobs/other\" }}{{ .x }}{{ end }}",
            "{{",
            "}}",
            &env,
            &proxy_var,
        )
        .unwrap_err();
        assert!(e.contains("\"nomad/jobs/other\" does not exist"), "{e}");
        let e = render_template(
            "{{ with nomadVar \"nomad/jobs/proxy\" }}{{ .missing }}{{ end }}",
            "{{",
            "}}",
            &env,
            &proxy_var,
        )
        .unwrap_err();
        assert!(e.contains("no item \"missing\""), "{e}");
        assert!(!e.contains("sentinel"), "{e}");
    }

    #[test]
    fn env_file_lines_become_variables() {
        let vars = parse_env_file("# c\nA=1\n\nexport B=\"two words\"\nC='x=y'\nnot a line\n");
        assert_eq!(
            vars,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words".to_string()),
                ("C".to_string(), "x=y".to_string()),
            ]
        );
    }
}
