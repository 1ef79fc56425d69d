//! `proxy-operator schema`: writes the JSON Schemas generated from the Rust types.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::spec;

/// Arguments of `proxy-operator schema`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write `proxyconfig.v1alpha1.schema.json` and
    /// `proxystatus.v1alpha1.schema.json` into.
    #[arg(long, value_name = "DIR", default_value = "crd-schemas")]
    out_dir: PathBuf,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("failed to create {}", args.out_dir.display()))?;
    for (name, contents) in spec::schema_files() {
        let path = args.out_dir.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
