//! `spec.job`: the proxy's Nomad job, with the proxy-dependent defaults (version, driver image,
//! count) filled in.

use super::field::Validator;
use crate::spec::model::{self, JobSettings};
use crate::spec::{CommandDriver, DockerDriver, Driver, Job, JobType, ProxyKind, ProxyTokens};

/// Default Traefik version (what `scripts/bootstrap` installs and tests run).
const DEFAULT_TRAEFIK_VERSION: &str = "3.7.15";
/// Default Caddy version.
const DEFAULT_CADDY_VERSION: &str = "2.11.7";

/// Checks `spec.job`, fills in its defaults (in the document too, so its digest and
/// re-serialisation carry them) and resolves it.
pub(super) fn check(v: &mut Validator, job: &mut Job, proxy: ProxyKind) -> JobSettings {
    v.nomad_id("spec.job.id", &job.id);
    if !job.cert_volume.is_empty() {
        v.identifier("spec.job.certVolume", &job.cert_volume);
    }
    if job.datacenters.is_empty() {
        v.error(
            "spec.job.datacenters",
            "must list at least one datacenter (\"*\" means all)",
        );
    }
    for (i, dc) in job.datacenters.iter().enumerate() {
        if dc.is_empty() || dc.chars().any(char::is_whitespace) {
            v.error(
                format!("spec.job.datacenters[{i}]"),
                format!("{dc:?} is not a datacenter name (no spaces; \"*\" means all)"),
            );
        }
    }
    if job.open_files < 1024 {
        v.error(
            "spec.job.openFiles",
            "must be at least 1024; a proxy holds two descriptors per proxied connection (default 65535)",
        );
    }
    v.identifier("spec.job.namespace", &job.namespace);
    v.identifier("spec.job.nodePool", &job.node_pool);
    if let Some(region) = &job.region {
        v.identifier("spec.job.region", region);
    }
    match (job.job_type, job.count) {
        (JobType::System, Some(_)) => v.error(
            "spec.job.count",
            "count only applies to type: service; a system job runs one proxy on every eligible node",
        ),
        (JobType::Service, Some(0)) => v.error("spec.job.count", "must be at least 1"),
        (JobType::Service, None) => job.count = Some(1),
        _ => {}
    }
    let default_version = match proxy {
        ProxyKind::Traefik => DEFAULT_TRAEFIK_VERSION,
        ProxyKind::Caddy => DEFAULT_CADDY_VERSION,
    };
    let version = job
        .version
        .get_or_insert_with(|| default_version.to_owned())
        .clone();
    if version.is_empty()
        || version.len() > 128
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    {
        v.error("spec.job.version", format!("{version:?} is not a version label; use letters, digits, '.', '_', '+', '-' (e.g. {default_version})"));
    }
    let official_image = match proxy {
        ProxyKind::Traefik => format!("traefik:v{}", version.trim_start_matches('v')),
        ProxyKind::Caddy => format!("caddy:{version}"),
    };
    match job
        .driver
        .get_or_insert(Driver::Docker(DockerDriver { image: None }))
    {
        Driver::Docker(docker) => {
            let image = docker.image.get_or_insert(official_image);
            if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                v.error("spec.job.driver.docker.image", format!("{image:?} is not an image reference (e.g. traefik:v{DEFAULT_TRAEFIK_VERSION})"));
            }
        }
        Driver::RawExec(cmd) => {
            default_command(cmd, proxy);
            v.command("spec.job.driver.rawExec", cmd);
        }
        Driver::Exec(cmd) => {
            default_command(cmd, proxy);
            v.command("spec.job.driver.exec", cmd);
        }
    }
    if job.resources.cpu == 0 {
        v.error("spec.job.resources.cpu", "must be at least 1 MHz");
    }
    if job.resources.memory_mb < 10 {
        v.error(
            "spec.job.resources.memoryMB",
            format!(
                "{} MB is below Nomad's minimum of 10 MB",
                job.resources.memory_mb
            ),
        );
    }
    check_tokens(v, job, proxy);
    resolve(job)
}

/// Nomad's rule for a variable path (`structs.validVariablePath`): what `nomad var put` accepts.
fn is_variable_path(path: &str) -> bool {
    (1..=128).contains(&path.len())
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_~/".contains(c))
        && !path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains("//")
}

/// `spec.job.tokens`: only Traefik reads the Consul and Nomad APIs; a variable path defaults
/// to the one the job's identity reads without a policy (`nomad/jobs/<job id>`), filled into
/// the document so its digest carries it.
fn check_tokens(v: &mut Validator, job: &mut Job, proxy: ProxyKind) {
    let job_path = format!("nomad/jobs/{}", job.id);
    match &mut job.tokens {
        None => {}
        Some(_) if proxy == ProxyKind::Caddy => v.error(
            "spec.job.tokens",
            "Caddy reads neither Consul nor Nomad (the operator loads its routes through Caddy's admin API), so it takes no tokens; remove spec.job.tokens",
        ),
        Some(ProxyTokens::WorkloadIdentity(_)) => {}
        Some(ProxyTokens::NomadVariable(var)) => {
            let path = var.path.get_or_insert(job_path.clone());
            if !is_variable_path(path) {
                v.error(
                    "spec.job.tokens.nomadVariable.path",
                    format!("{path:?} is not a Nomad variable path; use 1-128 letters, digits, '-', '_', '~' and '/' between segments (e.g. {job_path})"),
                );
            } else if path != &job_path && !path.starts_with(&format!("{job_path}/")) {
                v.warn(
                    "spec.job.tokens.nomadVariable.path",
                    format!("{path:?} is outside {job_path}, which the job reads without a policy; attach one granting read on it: nomad acl policy apply -job {} ...", job.id),
                );
            }
        }
    }
}

/// A command driver without a command runs the proxy's own binary from the node's PATH, so a
/// switch of `spec.proxy` needs no other edit (as the image does for docker).
fn default_command(cmd: &mut CommandDriver, proxy: ProxyKind) {
    if cmd.command.is_empty() {
        cmd.command = proxy.as_str().to_owned();
    }
}

fn resolve(job: &Job) -> JobSettings {
    // `check` always fills the driver in; an absent one resolves like the default, docker.
    let driver = match &job.driver {
        Some(Driver::RawExec(c)) => model::Driver::RawExec {
            command: c.command.clone(),
            args: c.args.clone(),
        },
        Some(Driver::Exec(c)) => model::Driver::Exec {
            command: c.command.clone(),
            args: c.args.clone(),
        },
        Some(Driver::Docker(d)) => model::Driver::Docker {
            image: d.image.clone().unwrap_or_default(),
        },
        None => model::Driver::Docker {
            image: String::new(),
        },
    };
    JobSettings {
        id: job.id.clone(),
        system: job.job_type == JobType::System,
        count: job.count.unwrap_or(1),
        datacenters: job.datacenters.clone(),
        namespace: Some(job.namespace.clone()),
        region: job.region.clone(),
        node_pool: Some(job.node_pool.clone()),
        driver,
        cpu: job.resources.cpu,
        memory_mb: job.resources.memory_mb,
        version: job.version.clone().filter(|v| !v.is_empty()),
        cert_volume: Some(job.cert_volume.clone()).filter(|v| !v.is_empty()),
        open_files: job.open_files,
        tokens: job.tokens.as_ref().map(|t| match t {
            ProxyTokens::WorkloadIdentity(_) => model::TokenSource::WorkloadIdentity,
            ProxyTokens::NomadVariable(var) => model::TokenSource::NomadVariable {
                path: var.path.clone().unwrap_or_default(),
            },
        }),
    }
}

impl Validator {
    fn command(&mut self, path: &str, cmd: &CommandDriver) {
        let c = &cmd.command;
        if c.is_empty() || c.trim() != c || c.chars().any(char::is_control) {
            self.error(format!("{path}.command"), format!("{c:?} is not a command; give an absolute path or a name in PATH (e.g. /usr/local/bin/traefik)"));
        } else if c.contains('/') && !c.starts_with('/') {
            self.error(format!("{path}.command"), format!("{c:?} is a relative path; give an absolute path or a bare name looked up in PATH"));
        }
        for (i, arg) in cmd.args.iter().enumerate() {
            if arg.contains('\0') {
                self.error(format!("{path}.args[{i}]"), "must not contain NUL bytes");
            }
        }
    }
}
