//! The task environment (`NOMAD_*`), `${...}` interpolation and writing `template`s (their
//! language: `template.rs`).

use super::*;

/// `PATH` when the twin itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) fn task_env(sh: &Shared, task: &Value) -> BTreeMap<String, String> {
    let task_name = View::task(task).str("Name");
    let task_dir = sh.alloc_dir.join(task_name);
    let node = &sh.node;
    let (node_id, node_name, dc) = (node.id.clone(), node.name.clone(), node.datacenter.clone());
    let mut env = BTreeMap::new();
    let mut put = |k: String, v: String| {
        env.insert(k, v);
    };
    // A minimal base, as issue 15 asks, instead of the agent's whole environment (real Nomad
    // passes raw_exec tasks the client's environment minus `env.denylist`): the command search
    // path and a home directory, then the `NOMAD_*` variables and the task's `env`.
    let path = sh.inner.config.client_path.clone();
    put(
        "PATH".into(),
        path.or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| DEFAULT_PATH.into()),
    );
    put(
        "HOME".into(),
        std::env::var("HOME").unwrap_or_else(|_| "/".into()),
    );
    put(
        "NOMAD_ALLOC_DIR".into(),
        sh.alloc_dir.join("alloc").display().to_string(),
    );
    put(
        "NOMAD_TASK_DIR".into(),
        task_dir.join("local").display().to_string(),
    );
    put(
        "NOMAD_SECRETS_DIR".into(),
        task_dir.join("secrets").display().to_string(),
    );
    put("NOMAD_ALLOC_ID".into(), sh.alloc_id.clone());
    put(
        "NOMAD_SHORT_ALLOC_ID".into(),
        sh.alloc_id.chars().take(8).collect(),
    );
    put("NOMAD_ALLOC_NAME".into(), sh.alloc_name.clone());
    let index = sh
        .alloc_name
        .rsplit('[')
        .next()
        .unwrap_or("0")
        .trim_end_matches(']')
        .to_string();
    put("NOMAD_ALLOC_INDEX".into(), index);
    put(
        "NOMAD_JOB_NAME".into(),
        View::job(&sh.job).str("Name").into(),
    );
    put("NOMAD_JOB_ID".into(), View::job(&sh.job).str("ID").into());
    put(
        "NOMAD_JOB_PARENT_ID".into(),
        View::job(&sh.job).str("ParentID").into(),
    );
    put(
        "NOMAD_GROUP_NAME".into(),
        View::group(&sh.group).str("Name").into(),
    );
    put("NOMAD_TASK_NAME".into(), task_name.into());
    put(
        "NOMAD_NAMESPACE".into(),
        View::job(&sh.job).str("Namespace").into(),
    );
    put(
        "NOMAD_REGION".into(),
        View::job(&sh.job).str("Region").into(),
    );
    put("NOMAD_DC".into(), dc);
    put("NOMAD_NODE_ID".into(), node_id);
    put("NOMAD_NODE_NAME".into(), node_name);
    let res = View::task(task).obj_or_empty("Resources");
    put("NOMAD_CPU_LIMIT".into(), res.uint("CPU").to_string());
    put(
        "NOMAD_MEMORY_LIMIT".into(),
        res.uint("MemoryMB").to_string(),
    );
    for p in &sh.ports {
        let l = &p.label;
        put(format!("NOMAD_PORT_{l}"), p.value.to_string());
        put(format!("NOMAD_HOST_PORT_{l}"), p.value.to_string());
        let ip = &node.address;
        put(format!("NOMAD_IP_{l}"), ip.clone());
        put(format!("NOMAD_HOST_IP_{l}"), ip.clone());
        put(format!("NOMAD_ADDR_{l}"), format!("{ip}:{}", p.value));
        put(format!("NOMAD_HOST_ADDR_{l}"), format!("{ip}:{}", p.value));
        put(format!("NOMAD_ALLOC_PORT_{l}"), p.value.to_string());
    }
    for meta in [
        View::job(&sh.job).raw("Meta"),
        View::group(&sh.group).raw("Meta"),
        View::task(task).raw("Meta"),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(m) = meta.as_object() {
            for (k, v) in m {
                let value = v.as_str().unwrap_or_default().to_string();
                put(
                    format!("NOMAD_META_{}", k.replace(['.', '-'], "_")),
                    value.clone(),
                );
                put(format!("NOMAD_META_{k}"), value);
            }
        }
    }
    let base = env.clone();
    if let Some(m) = View::task(task).raw("Env").and_then(Value::as_object) {
        for (k, v) in m {
            let value = interpolate(v.as_str().unwrap_or_default(), &base, &sh.node);
            env.insert(k.clone(), value);
        }
    }
    env
}

pub(super) fn interpolate(text: &str, env: &BTreeMap<String, String>, node: &Node) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let value = env.get(name).cloned().or_else(|| match name {
            "node.unique.id" => Some(node.id.clone()),
            "node.unique.name" => Some(node.name.clone()),
            "node.datacenter" => Some(node.datacenter.clone()),
            "node.region" => Some("global".into()),
            "node.class" => Some(String::new()),
            "attr.unique.network.ip-address" => Some(node.address.clone()),
            _ => None,
        });
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

pub(super) fn within(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    let mut out = base.to_path_buf();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::CurDir => {}
            std::path::Component::RootDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Renders the task's templates into its directory; the variables of `env = true` templates
/// (`Envvars`) join `env` once all are written, as the Nomad client sets them before the task
/// starts.
pub(super) fn write_templates(
    task_dir: &Path,
    task: &Value,
    env: &mut BTreeMap<String, String>,
    node: &Node,
    vars: &Variables<'_>,
) -> Result<(), String> {
    let mut exported = Vec::new();
    for t in View::task(task).list("Templates") {
        let dest = interpolate(t.str("DestPath"), env, node);
        if dest.is_empty() {
            return Err("template has no destination".into());
        }
        if !t.str("SourcePath").is_empty() && t.str("EmbeddedTmpl").is_empty() {
            return Err(format!(
                "template source {:?}: only literal data is supported by the twin",
                t.str("SourcePath")
            ));
        }
        let left = if t.str("LeftDelim").is_empty() {
            "{{"
        } else {
            t.str("LeftDelim")
        };
        let right = if t.str("RightDelim").is_empty() {
            "}}"
        } else {
            t.str("RightDelim")
        };
        let body = render_template(t.str("EmbeddedTmpl"), left, right, env, vars)
            .map_err(|e| format!("template {dest:?}: {e}"))?;
        if t.bool("Envvars") {
            exported.extend(parse_env_file(&body));
        }
        let path = within(task_dir, &dest)
            .ok_or_else(|| format!("template destination {dest:?} escapes the task directory"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        let perms = u32::from_str_radix(
            if t.str("Perms").is_empty() {
                "0644"
            } else {
                t.str("Perms")
            },
            8,
        )
        .unwrap_or(0o644);
        // Created with its mode, so a secrets template is never readable by others, not even
        // between the write and a chmod; the chmod covers a file left by an earlier start.
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(perms)
                .open(&path)?;
            file.set_permissions(std::fs::Permissions::from_mode(perms))?;
            file.write_all(body.as_bytes())
        };
        write().map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    }
    env.extend(exported);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn template_destinations_cannot_escape_the_task_dir() {
        assert!(within(Path::new("/a/task"), "../x").is_none());
        assert_eq!(
            within(Path::new("/a/task"), "local/x.yml"),
            Some(PathBuf::from("/a/task/local/x.yml"))
        );
    }
}
