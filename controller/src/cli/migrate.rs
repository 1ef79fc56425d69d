//! `proxy-operator migrate ...`: add Traefik tags next to legacy HinD/fabio tags, in job files or
//! in live jobs. Exit codes follow `plan` tools: 0 nothing to change, 1 changes (shown or
//! written), 2 errors.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::migrate::files::{self, FileMigration, Format};
use crate::migrate::{ConvertOptions, Finding};

/// Migration subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Convert legacy tags (HinD `https://`, fabio `urlprefix-`) to Traefik tags in job files or
    /// live jobs. Without --write/--apply it only shows the change.
    Tags(TagsArgs),
}

/// Arguments of `proxy-operator migrate tags`.
#[derive(Debug, clap::Args)]
pub struct TagsArgs {
    /// Job files (`.nomad.hcl`, `.hcl`, `.nomad`, `.json`).
    #[arg(required_unless_present = "live", conflicts_with = "live")]
    pub files: Vec<PathBuf>,
    /// Write the files (atomically) instead of printing a diff.
    #[arg(long)]
    pub write: bool,
    /// Also remove the legacy tags whose Traefik tags are present (the last migration step).
    #[arg(long)]
    pub remove_legacy: bool,
    /// Consul datacenter that replaces fabio's `$DC`.
    #[arg(long)]
    pub datacenter: Option<String>,
    /// Traefik entry point for plain HTTP.
    #[arg(long, default_value = "web")]
    pub web_entrypoint: String,
    /// Traefik entry point for TLS.
    #[arg(long, default_value = "websecure")]
    pub websecure_entrypoint: String,
    /// certResolver to set on TLS routers.
    #[arg(long)]
    pub cert_resolver: Option<String>,
    /// Work on the jobs of a live cluster (NOMAD_ADDR, NOMAD_TOKEN) instead of files.
    #[arg(long)]
    pub live: bool,
    /// Nomad namespace for --live (`*` for all).
    #[arg(long, requires = "live")]
    pub namespace: Option<String>,
    /// Register the updated jobs (with EnforceIndex) instead of only showing them.
    #[arg(long, requires = "live")]
    pub apply: bool,
}

impl TagsArgs {
    fn options(&self) -> ConvertOptions {
        ConvertOptions {
            web_entrypoint: self.web_entrypoint.clone(),
            websecure_entrypoint: self.websecure_entrypoint.clone(),
            cert_resolver: self.cert_resolver.clone(),
            datacenter: self.datacenter.clone(),
            ..ConvertOptions::default()
        }
    }
}

/// Runs the command.
pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Tags(args) if args.live => live(&args).await,
        Command::Tags(args) => Ok(run_files(
            &args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )),
    }
}

/// How one file went.
enum Outcome {
    Unchanged,
    Changed,
    Failed,
}

/// The file mode, with output streams passed in so tests can read them.
pub fn run_files(
    args: &TagsArgs,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> ExitCode {
    let options = args.options();
    let mut changed = false;
    let mut failed = false;
    for path in &args.files {
        match one_file(path, args, &options, out, err) {
            Ok(Outcome::Unchanged) => {}
            Ok(Outcome::Changed) => changed = true,
            Ok(Outcome::Failed) => failed = true,
            Err(e) => {
                let _ = writeln!(err, "error: {}: {e:#}", path.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(super::EXIT_ERROR)
    } else if changed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_findings(path: &Path, m: &FileMigration, err: &mut dyn std::io::Write) {
    let print = |err: &mut dyn std::io::Write, at: &str, f: &Finding| {
        let _ = writeln!(err, "{}: {at}: {f}", path.display());
    };
    for f in &m.findings {
        let _ = writeln!(
            err,
            "{}: {}: {}: {}",
            path.display(),
            f.tag,
            f.option,
            f.reason
        );
    }
    for s in &m.services {
        if s.migration.already_converted && s.migration.remove.is_empty() {
            let _ = writeln!(
                err,
                "{}: {}: already has traefik tags; left alone",
                path.display(),
                s.location
            );
        }
        for f in &s.migration.findings {
            print(err, &s.location, f);
        }
    }
}

fn one_file(
    path: &Path,
    args: &TagsArgs,
    options: &ConvertOptions,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> anyhow::Result<Outcome> {
    let text =
        std::fs::read_to_string(path).with_context(|| "failed to read the file".to_string())?;
    let migration =
        match files::migrate_text(&text, Format::from_path(path), options, args.remove_legacy) {
            Ok(m) => m,
            Err(e) => {
                let _ = writeln!(err, "error: {}: {e} (file left untouched)", path.display());
                return Ok(Outcome::Failed);
            }
        };
    print_findings(path, &migration, err);
    if !migration.is_change() {
        return Ok(Outcome::Unchanged);
    }
    if args.write {
        write_atomically(path, &migration.updated).context("failed to write the file")?;
        let _ = writeln!(err, "{}: written", path.display());
    } else {
        let diff = similar::TextDiff::from_lines(&text, &migration.updated);
        let name = path.display().to_string();
        write!(
            out,
            "{}",
            diff.unified_diff()
                .context_radius(3)
                .header(&format!("a/{name}"), &format!("b/{name}"))
        )?;
    }
    Ok(Outcome::Changed)
}

/// Writes through a temporary file in the same directory and a rename, so readers see the old or
/// the new file, never half of one; the file's permissions are kept.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.migrate-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Meta key that marks the operator's own jobs (DESIGN §3): never migrated.
const OWNER_META: &str = "proxy-operator/owner";

/// What happened to one live job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LiveResult {
    NoLegacyTags,
    AlreadyConverted,
    WouldChange,
    Applied { version: u64 },
    SkippedOwned,
    SkippedChangedMeanwhile,
    Failed(String),
}

impl std::fmt::Display for LiveResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveResult::NoLegacyTags => write!(f, "no legacy tags"),
            LiveResult::AlreadyConverted => write!(f, "already converted"),
            LiveResult::WouldChange => write!(f, "would change (use --apply)"),
            LiveResult::Applied { version } => {
                write!(f, "applied as version {version} (EnforceIndex)")
            }
            LiveResult::SkippedOwned => write!(f, "skipped: owned by proxy-operator"),
            LiveResult::SkippedChangedMeanwhile => {
                write!(f, "skipped: job changed meanwhile (EnforceIndex), rerun")
            }
            LiveResult::Failed(e) => write!(f, "error: {e}"),
        }
    }
}

async fn live(args: &TagsArgs) -> anyhow::Result<ExitCode> {
    use crate::nomad::{JobListStub, NomadApi as _, NomadClient};
    use crate::transport::{ClientConfig, QueryOptions, Request};

    let mut config = ClientConfig::nomad_from_env(|k| std::env::var(k).ok())
        .context("failed to read the Nomad settings")?;
    if let Some(ns) = &args.namespace {
        anyhow::ensure!(
            ns != "*",
            "--namespace '*' is not supported; run once per namespace"
        );
        config.namespace = Some(ns.clone());
    }
    let client = NomadClient::new(&config).context("failed to build the Nomad client")?;
    let response = client
        .http()
        .send(Request::get("/v1/jobs"))
        .await
        .context("failed to list jobs")?;
    let stubs: Vec<JobListStub> = response.json().context("failed to decode the job list")?;
    let options = args.options();

    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let mut rows: Vec<(String, usize, usize, LiveResult)> = Vec::new();
    for stub in stubs {
        let job = match client.job_read(&stub.id, QueryOptions::NOW).await {
            Ok((Some(job), _)) => job,
            Ok((None, _)) => continue,
            Err(e) => {
                rows.push((stub.id.clone(), 0, 0, LiveResult::Failed(e.to_string())));
                continue;
            }
        };
        if job.meta.contains_key(OWNER_META) {
            rows.push((job.id.clone(), 0, 0, LiveResult::SkippedOwned));
            continue;
        }
        let text = serde_json::to_string(&job.raw).context("failed to encode a job")?;
        let migration = match files::migrate_json(&text, &options, args.remove_legacy) {
            Ok(m) => m,
            Err(e) => {
                rows.push((job.id.clone(), 0, 0, LiveResult::Failed(e.to_string())));
                continue;
            }
        };
        let added: usize = migration
            .services
            .iter()
            .map(|s| s.migration.add.len())
            .sum();
        let findings: usize = migration
            .services
            .iter()
            .map(|s| s.migration.findings.len())
            .sum::<usize>()
            + migration.findings.len();
        print_findings(Path::new(&format!("job {}", job.id)), &migration, &mut err);
        for s in migration
            .services
            .iter()
            .filter(|s| s.migration.is_change())
        {
            writeln!(out, "job {}: {}", job.id, s.location)?;
            for t in &s.migration.add {
                writeln!(out, "  + {t}")?;
            }
            for t in &s.migration.remove {
                writeln!(out, "  - {t}")?;
            }
        }
        let result = if migration.services.is_empty() {
            LiveResult::NoLegacyTags
        } else if !migration.is_change() {
            LiveResult::AlreadyConverted
        } else if !args.apply {
            LiveResult::WouldChange
        } else {
            let updated: serde_json::Value = serde_json::from_str(&migration.updated)
                .context("failed to decode the migrated job")?;
            match client
                .job_register(&updated, Some(job.job_modify_index))
                .await
            {
                Ok(_) => LiveResult::Applied {
                    version: job.version + 1,
                },
                Err(e) if e.is_conflict() => LiveResult::SkippedChangedMeanwhile,
                Err(e) => LiveResult::Failed(e.to_string()),
            }
        };
        rows.push((job.id.clone(), added, findings, result));
    }

    writeln!(out)?;
    writeln!(
        out,
        "{:<32} {:>6} {:>8}  RESULT",
        "JOB", "+TAGS", "FINDINGS"
    )?;
    for (id, added, findings, result) in &rows {
        writeln!(out, "{id:<32} {added:>6} {findings:>8}  {result}")?;
    }
    let failed = rows.iter().any(|r| {
        matches!(
            r.3,
            LiveResult::Failed(_) | LiveResult::SkippedChangedMeanwhile
        )
    });
    let changed = rows
        .iter()
        .any(|r| matches!(r.3, LiveResult::WouldChange | LiveResult::Applied { .. }));
    Ok(if failed {
        ExitCode::from(super::EXIT_ERROR)
    } else if changed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
