//! `proxy-operator plan FILE`: validates and renders a document, then shows what applying it
//! would change on the live cluster: the proxy switch, a live policy change or a restart, the
//! job diff from Nomad's plan endpoint and the KV policy tree diff. Nothing is written.
//!
//! Exit codes follow `nomad job plan`: 0 nothing would change, 1 something would, 255 error
//! (invalid document, cluster unreachable).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::cluster;
use crate::consul::ConsulApi;
use crate::nomad::{FieldDiff, JobDiff, NomadApi, ObjectDiff};
use crate::plan::{self as planner, Desired, Observed, ObservedJob, Plan, Slots};
use crate::render::nomad_job::{Slot, slot_job};
use crate::render::{self, META_PROXY};
use crate::spec::{self, ValidatedSpec, looks_secret};
use crate::transport::{ConsulFlags, NomadFlags, QueryOptions};

/// Exit code of `plan` for an error, as `nomad job plan` has it.
pub const EXIT_PLAN_ERROR: u8 = 255;

/// Arguments of `proxy-operator plan`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 no change, 1 changes, 255 error (as `nomad job plan`).")]
pub struct Args {
    /// The ProxyConfig document (YAML or JSON).
    pub file: PathBuf,
    /// KV prefix the operator uses.
    #[arg(long, value_parser = super::kv_prefix, default_value = "proxy-operator")]
    pub prefix: String,
    #[command(flatten)]
    consul: Box<ConsulFlags>,
    #[command(flatten)]
    nomad: Box<NomadFlags>,
}

/// What a plan found, for `plan` and `apply` alike.
#[derive(Debug, Default)]
pub(super) struct Report {
    /// The text shown.
    pub text: String,
    /// Whether applying would change anything.
    pub changes: bool,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("failed to read {}", args.file.display()))?;
    let Some(spec) = super::load_document(&args.file, &bytes, "invalid ProxyConfig") else {
        return Ok(ExitCode::from(EXIT_PLAN_ERROR));
    };
    let consul = cluster::consul(*args.consul)?;
    let nomad = cluster::nomad(*args.nomad)?;
    match report(&spec, &args.prefix, &consul, &nomad).await {
        Ok(report) => {
            super::validate::write_quietly(std::io::stdout().lock(), &report.text)
                .context("failed to write to stdout")?;
            Ok(ExitCode::from(u8::from(report.changes)))
        }
        Err(e) => {
            cluster::print_error(&e);
            Ok(ExitCode::from(EXIT_PLAN_ERROR))
        }
    }
}

/// Compares `spec` with what runs.
pub(super) async fn report(
    spec: &ValidatedSpec,
    prefix: &str,
    consul: &crate::consul::ConsulClient,
    nomad: &impl NomadApi,
) -> anyhow::Result<Report> {
    let (ctx, placeholder) = cluster::render_context(spec, prefix, Some(consul)).await?;
    if placeholder {
        eprintln!(
            "note: the basic-auth users could not be read here; a placeholder stands in, so their KV entry shows as changed"
        );
    }
    let kv_root = format!("{prefix}/traefik/");
    let rendered =
        crate::proxy::render(spec, &ctx, &kv_root).context("failed to render the document")?;
    // `plan` reports what would change, not the gate the operator would then run, so where the
    // operator reaches the proxy doesn't matter here.
    let reach = crate::proxy::Reach::on("localhost");
    let desired = Desired {
        spec,
        rendered: &rendered,
        owner: &ctx.owner,
        kv_root: &kv_root,
        reach: &reach,
    };
    let job_id = planner::job_id(&desired).to_owned();
    let mut slot_jobs = Vec::with_capacity(2);
    for slot in [Slot::A, Slot::B] {
        let id = slot.job_id(&job_id);
        let (job, _) = nomad
            .job_read(&id, QueryOptions::NOW)
            .await
            .with_context(|| format!("failed to read the proxy job {id}"))?;
        slot_jobs.push(job.as_ref().map(ObservedJob::from));
    }
    let (pairs, _) = consul
        .kv_list(&kv_root, QueryOptions::NOW)
        .await
        .with_context(|| format!("failed to read the policy tree {kv_root}"))?;
    let status = cluster::read_status(consul, prefix)
        .await?
        .unwrap_or_default();
    let b = slot_jobs.pop().flatten();
    let a = slot_jobs.pop().flatten();
    let (job, slots) = Slots::pick(a, b, &ctx.owner);
    // What serves is what the document is compared with: after a handover, slot b.
    let serving_id = slots.serving.job_id(&job_id);
    let running_proxy = job.as_ref().and_then(|j| j.meta.get(META_PROXY).cloned());
    let observed = Observed {
        job,
        kv: pairs
            .into_iter()
            .filter(|p| p.key.starts_with(&kv_root))
            .map(|p| (p.key, String::from_utf8_lossy(&p.value).into_owned()))
            .collect(),
    };
    let decision = planner::plan_slots(&desired, &observed, &slots, &status);
    let config_key = format!("{prefix}/config");
    let (live, _) = consul
        .kv_get(&config_key, QueryOptions::NOW)
        .await
        .with_context(|| format!("failed to read {config_key}"))?;

    let mut out = String::new();
    let wanted = format!("{:?}", spec.proxy()).to_lowercase();
    let job_differs = observed
        .job
        .as_ref()
        .is_none_or(|j| j.stopped || j.spec_digest() != Some(rendered.job_digest.as_str()));
    let kv_diff = kv_diff(&rendered.traefik_kv, &observed.kv);
    let _ = writeln!(out, "Document: spec digest {}", short(spec.digest()));
    match &live {
        Some(pair) => {
            let _ = writeln!(
                out,
                "Live document: {config_key} at index {} (`apply --if-index {}` writes only if it is still unchanged)",
                pair.modify_index, pair.modify_index
            );
        }
        None => {
            let _ = writeln!(out, "Live document: {config_key} does not exist yet");
        }
    }
    match (&running_proxy, job_differs) {
        (Some(running), _) if *running != wanted => {
            let _ = writeln!(
                out,
                "Proxy switch: {running} → {wanted}: the {wanted} job starts, and the {running} job stops only after {wanted} passes the health gate"
            );
        }
        (None, true) if observed.job.is_none() => {
            let _ = writeln!(out, "Proxy: {wanted} (job {serving_id} is new)");
        }
        _ => {
            let _ = writeln!(out, "Proxy: {wanted}");
        }
    }
    let handover = match &decision {
        Plan::Apply(change) => change
            .job
            .as_ref()
            .and_then(|j| j.handover.as_ref().map(|h| (&j.job_id, &h.from_job))),
        _ => None,
    };
    let kind = match (job_differs, !kv_diff.is_empty()) {
        (true, _) => match handover {
            Some((new, old)) => format!(
                "handover: job {new} starts next to {old} on the same ports, and {old} stops only after {new} passes the health gate"
            ),
            None => format!(
                "restart: a new version of job {serving_id} (the proxy's allocations are replaced)"
            ),
        },
        (false, true) => match spec.proxy() {
            spec::ProxyKind::Traefik => {
                "live policy change: Traefik reads it from Consul KV, no restart".to_owned()
            }
            spec::ProxyKind::Caddy => {
                "live policy change: Caddy loads it through its admin API, no restart".to_owned()
            }
        },
        (false, false) => "no change".to_owned(),
    };
    let _ = writeln!(out, "Change: {kind}");
    let _ = writeln!(out, "Operator would: {}", describe(&decision));
    if job_differs {
        // Planned under the serving slot's ID, so the diff is against what serves (a handover
        // registers the same job under the other slot's ID).
        let planned = slot_job(&rendered.job, slots.serving)
            .context("failed to render the job for the serving slot")?;
        let plan = nomad
            .job_plan(&planned, true)
            .await
            .with_context(|| format!("failed to plan job {serving_id} with Nomad"))?;
        let _ = writeln!(out, "\nJob {serving_id} (Nomad plan diff):");
        match &plan.diff {
            Some(diff) if diff.diff_type != "None" => write_job_diff(&mut out, diff),
            _ => {
                let _ = writeln!(
                    out,
                    "  (Nomad reports no field changes; the owner stamp differs)"
                );
            }
        }
        if !plan.warnings.is_empty() {
            let _ = writeln!(out, "  warnings: {}", plan.warnings.trim());
        }
    }
    if !kv_diff.is_empty() {
        let _ = writeln!(out, "\nPolicy tree {kv_root}:");
        for line in &kv_diff {
            let _ = writeln!(out, "  {line}");
        }
    }
    Ok(Report {
        text: out,
        changes: job_differs || !kv_diff.is_empty(),
    })
}

fn describe(plan: &Plan) -> String {
    match plan {
        Plan::Noop => "nothing".to_owned(),
        Plan::Apply(change) => format!("roll out ({})", change.kind()),
        Plan::Hold(reason) => format!("hold: {reason}"),
        Plan::Stalled { reason } => format!("stall: {reason}"),
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

/// A value as shown: secret keys and secret-looking values are never printed.
fn shown(key: &str, value: &str) -> String {
    if render::traefik::is_secret_key(key) || looks_secret(value) {
        "<redacted>".to_owned()
    } else {
        format!("{value:?}")
    }
}

/// `+ key = value`, `~ key: old → new`, `- key`, in key order.
fn kv_diff(desired: &[(String, String)], observed: &[(String, String)]) -> Vec<String> {
    let want: std::collections::BTreeMap<&str, &str> = desired
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let have: std::collections::BTreeMap<&str, &str> = observed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut keys: Vec<&str> = want.keys().chain(have.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| match (have.get(k), want.get(k)) {
            (None, Some(v)) => Some(format!("+ {k} = {}", shown(k, v))),
            (Some(_), None) => Some(format!("- {k}")),
            (Some(old), Some(new)) if old != new => {
                Some(format!("~ {k}: {} → {}", shown(k, old), shown(k, new)))
            }
            _ => None,
        })
        .collect()
}

fn marker(diff_type: &str) -> &'static str {
    match diff_type {
        "Added" => "+",
        "Deleted" => "-",
        "Edited" => "+/-",
        _ => " ",
    }
}

fn write_fields(out: &mut String, fields: &[FieldDiff], depth: usize) {
    let pad = "  ".repeat(depth);
    for f in fields.iter().filter(|f| f.diff_type != "None") {
        let value = |v: &str| {
            if looks_secret(v) {
                "<redacted>".to_owned()
            } else {
                format!("{v:?}")
            }
        };
        let change = match f.diff_type.as_str() {
            "Added" => value(&f.new),
            "Deleted" => value(&f.old),
            _ => format!("{} => {}", value(&f.old), value(&f.new)),
        };
        let notes = if f.annotations.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.annotations.join(", "))
        };
        let _ = writeln!(
            out,
            "{pad}{} {}: {change}{notes}",
            marker(&f.diff_type),
            f.name
        );
    }
}

fn write_objects(out: &mut String, objects: &[ObjectDiff], depth: usize) {
    let pad = "  ".repeat(depth);
    for o in objects.iter().filter(|o| o.diff_type != "None") {
        let _ = writeln!(out, "{pad}{} {} {{", marker(&o.diff_type), o.name);
        write_fields(out, &o.fields, depth + 1);
        write_objects(out, &o.objects, depth + 1);
        let _ = writeln!(out, "{pad}  }}");
    }
}

/// Nomad's diff in the shape `nomad job plan` prints it.
fn write_job_diff(out: &mut String, diff: &JobDiff) {
    let _ = writeln!(out, "{} Job: {:?}", marker(&diff.diff_type), diff.id);
    write_fields(out, &diff.fields, 1);
    write_objects(out, &diff.objects, 1);
    for tg in diff.task_groups.iter().filter(|g| g.diff_type != "None") {
        let _ = writeln!(out, "{} Task Group: {:?}", marker(&tg.diff_type), tg.name);
        write_fields(out, &tg.fields, 1);
        write_objects(out, &tg.objects, 1);
        for t in tg.tasks.iter().filter(|t| t.diff_type != "None") {
            let notes = if t.annotations.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.annotations.join(", "))
            };
            let _ = writeln!(out, "  {} Task: {:?}{notes}", marker(&t.diff_type), t.name);
            write_fields(out, &t.fields, 2);
            write_objects(out, &t.objects, 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kv_diff_marks_added_changed_and_removed_keys_and_never_prints_users() {
        let desired = vec![
            ("p/traefik/a".to_owned(), "1".to_owned()),
            ("p/traefik/b".to_owned(), "2".to_owned()),
            (
                "p/traefik/http/middlewares/m/basicAuth/users/0".to_owned(),
                "u:$apr1$x$y".to_owned(),
            ),
        ];
        let observed = vec![
            ("p/traefik/b".to_owned(), "3".to_owned()),
            ("p/traefik/c".to_owned(), "4".to_owned()),
        ];
        let lines = kv_diff(&desired, &observed);
        assert_eq!(lines[0], "+ p/traefik/a = \"1\"");
        assert_eq!(lines[1], "~ p/traefik/b: \"3\" → \"2\"");
        assert_eq!(lines[2], "- p/traefik/c");
        assert!(lines[3].ends_with("= <redacted>"), "{lines:?}");
        assert!(kv_diff(&desired, &desired).is_empty());
    }
}
