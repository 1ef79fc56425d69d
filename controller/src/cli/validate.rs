//! `proxy-operator validate FILE...`: parse + validate documents without touching a cluster.
//!
//! Exit 0 when every file is valid, 1 when any is invalid, 2 when a file cannot be read.
//! Text output: `FILE: valid (digest …)` on stdout, `FILE: spec.x.y: message` on stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use super::EXIT_ERROR;
use crate::render;
use crate::spec::{self, FieldError};

/// Arguments of `proxy-operator validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ProxyConfig documents (YAML or JSON); `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// `text` (errors on stderr) or `json` (one report per file on stdout).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    file: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    io_error: Option<String>,
    errors: Vec<FieldError>,
    warnings: Vec<FieldError>,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reports: Vec<Report> = args.files.iter().map(|f| check(f)).collect();
    let (mut out, mut err) = (String::new(), String::new());
    match args.output {
        Output::Json => out = serde_json::to_string_pretty(&reports)? + "\n",
        Output::Text => {
            use std::fmt::Write as _;
            for r in &reports {
                if let Some(e) = &r.io_error {
                    writeln!(err, "{}: {e}", r.file)?;
                }
                for e in &r.errors {
                    writeln!(err, "{}: {e}", r.file)?;
                }
                for w in &r.warnings {
                    writeln!(err, "{}: warning: {w}", r.file)?;
                }
                if r.valid {
                    writeln!(
                        out,
                        "{}: valid (digest {})",
                        r.file,
                        r.digest.as_deref().unwrap_or_default()
                    )?;
                }
            }
        }
    }
    write_quietly(std::io::stderr().lock(), &err).context("failed to write to stderr")?;
    write_quietly(std::io::stdout().lock(), &out).context("failed to write to stdout")?;
    Ok(if reports.iter().any(|r| r.io_error.is_some()) {
        ExitCode::from(EXIT_ERROR)
    } else if reports.iter().any(|r| !r.valid) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn check(file: &Path) -> Report {
    let name = file.display().to_string();
    let mut report = Report {
        file: name,
        valid: false,
        digest: None,
        io_error: None,
        errors: vec![],
        warnings: vec![],
    };
    match read_limited(file) {
        Err(e) => report.io_error = Some(format!("failed to read: {e}")),
        Ok(bytes) => match spec::load(&bytes) {
            Ok(v) => match render_check(&v) {
                Ok(()) => {
                    report.valid = true;
                    report.digest = Some(v.digest().to_owned());
                    report.warnings = v.warnings().to_vec();
                }
                Err(e) => report.errors = vec![e],
            },
            Err(e) => report.errors = e.field_errors(),
        },
    }
    report
}

/// Writes `text`; a reader that went away (`validate … | head`) is not an error: the exit code
/// still tells whether the documents are valid. `print!` would panic instead.
pub(crate) fn write_quietly(mut to: impl std::io::Write, text: &str) -> std::io::Result<()> {
    match to.write_all(text.as_bytes()).and_then(|()| to.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Renders the document as the operator would, so `validate` refuses what the loop reports as
/// Invalid (the policy key budget, values a proxy rejects). Basic-auth users live behind a
/// reference `validate` does not read; one placeholder user (bcrypt, which both proxies accept)
/// stands in for them.
fn render_check(spec: &spec::ValidatedSpec) -> Result<(), FieldError> {
    const PLACEHOLDER: &str = "user:$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
    let ctx =
        render::RenderContext::default().with_unresolved_users(spec, &[PLACEHOLDER.to_string()]);
    let kv_root = format!("{}/traefik/", ctx.prefix);
    match crate::proxy::render(spec, &ctx, &kv_root) {
        Ok(_) => Ok(()),
        Err(
            render::Error::InvalidValue { field, reason }
            | render::Error::Unsupported { field, reason },
        ) => {
            let path = if field.starts_with("spec") {
                field
            } else {
                format!("spec.{field}")
            };
            Err(FieldError::new(path, reason))
        }
        Err(e) => Err(FieldError::new("", e.to_string())),
    }
}

/// Reads at most one byte past the document limit, so a huge file is refused without being
/// loaded whole.
fn read_limited(file: &Path) -> std::io::Result<Vec<u8>> {
    let limit = spec::MAX_DOCUMENT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(file)?
            .take(limit)
            .read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}
