//! Typed pieces of Nomad's JSON job format (the `Job` object of `POST /v1/jobs`).
//!
//! Field names are the Go field names of Nomad's `api` package (see
//! `fixtures/nomad-api-fields.json`): Nomad decodes job JSON case-insensitively and silently
//! drops unknown keys, so a misspelt key here would be lost without a trace. The field guard test
//! in `tests/render_nomad_fields.rs` walks every rendered job against that file. Durations are
//! integers in nanoseconds, as the API expects. Empty values are skipped so the rendered job only
//! carries what the operator owns, and Nomad's defaults fill the rest.
//!
//! No token field (`ConsulToken`, `VaultToken`, ...) exists here on purpose: tokens never go into
//! a rendered job (anyone with `read-job` reads a job spec).
//!
//! # How the proxy's tokens reach it
//! - Caddy talks to neither API: the operator loads its routes through the admin API. No token.
//! - Traefik's Consul Catalog and Consul KV providers use Consul's Go client, which falls back to
//!   `CONSUL_HTTP_TOKEN` / `CONSUL_HTTP_TOKEN_FILE` from the task's environment when their
//!   `token` option is empty (`controller/tests/acl_traefik.rs` proves it with real Traefik).
//! - Traefik's Nomad provider reads only `providers.nomad.endpoint.token` from its static
//!   config: Nomad's `api.NewClient` does not default the token from `NOMAD_TOKEN`, and Traefik
//!   takes its static config from one source (this file), never from the file and `TRAEFIK_*`
//!   variables together.
//!
//! `spec.job.tokens` names where both come from, and the job carries only the way to them,
//! read by the Nomad client when it starts the task:
//! - `workloadIdentity`: `identity { env = true }` makes the task's identity its `NOMAD_TOKEN`
//!   (the proxy's policy attached with `nomad acl policy apply -job`), and a `consul_default`
//!   identity makes the client log in to Consul and write `secrets/consul_token`, which an
//!   `env = true` template points `CONSUL_HTTP_TOKEN_FILE` at (as the operator's own
//!   `nomad-jobs/proxy-operator.nomad.hcl` does);
//! - `nomadVariable`: an `env = true` template sets `CONSUL_HTTP_TOKEN` from the variable's
//!   `consul_token` item (`nomadVar`, read with the task's identity).
//!
//! The Nomad token goes into the static config itself ([`nomad_token_action`]), which then
//! moves from `local/` to `secrets/`. Without `tokens` none of this is rendered. The twin's
//! executor has none of these (templates are literal data plus `{{ env }}`, `Envvars` is
//! ignored, no Variables, no workload identities): `controller/tests/acl_traefik.rs` renders
//! the job's templates the way the client would and runs real Traefik on the result;
//! `proxy-operator dev` gives the proxy read access through Consul's anonymous token instead
//! (`dev::acl`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// How often Nomad checks the proxy's own health endpoint: Nomad's minimum (`minCheckInterval`
/// in `nomad/structs/services.go`), because the first check of a new allocation runs before
/// the proxy listens and every structural rollout waits one interval for the next.
const PROXY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long one health check of the proxy may take.
const PROXY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Nomad's wait before restarting a proxy that exited. Short, because the proxy is the cluster's
/// edge and the delay is nearly all of the outage (issue 10 measured 10.2 s for Caddy, of which
/// 10 s was this delay; the fault matrix 511 failed requests for Traefik at 10 s). A restarted
/// Caddy comes back from its bootstrap config and the operator loads the live one within
/// milliseconds; Traefik reads its providers again. During a rollout the first exit fails the
/// gate anyway, and two attempts in five minutes with mode `fail` still stop a crash loop.
const PROXY_RESTART_DELAY: Duration = Duration::from_secs(1);

/// Nanoseconds of a duration, as Nomad's JSON expects (`time.Duration`). Saturates at `i64::MAX`.
pub fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A Nomad job.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Job {
    /// Job ID, unique in its namespace.
    #[serde(rename = "ID")]
    pub id: String,
    /// Display name; the operator keeps it equal to the ID.
    pub name: String,
    /// `service` or `system`.
    #[serde(rename = "Type")]
    pub job_type: String,
    /// Namespace; `None` leaves Nomad's default (or the request's `?namespace=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Region; `None` leaves the agent's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Datacenters the job may run in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
    /// Node pool; `None` leaves Nomad's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// The task groups.
    pub task_groups: Vec<TaskGroup>,
    /// Job-level update strategy (merged into each group by Nomad).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStrategy>,
    /// Free-form metadata; carries the operator's ownership stamp.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// A task group.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroup {
    /// Group name.
    pub name: String,
    /// Instances (service jobs); system jobs run one per node and leave it unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Group networks with the reserved (static) host ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkResource>,
    /// Services registered for the group.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Restart policy for the group's tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Volumes the group's tasks may mount, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeRequest>,
}

/// A group volume (`VolumeRequest`): here a Nomad host volume.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeRequest {
    /// Name inside the group.
    pub name: String,
    /// `host`.
    #[serde(rename = "Type")]
    pub volume_type: String,
    /// The client's `host_volume` name.
    pub source: String,
    /// Read-only mount.
    pub read_only: bool,
}

/// A task's mount of a group volume.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeMount {
    /// Group volume name.
    pub volume: String,
    /// Path inside the task.
    pub destination: String,
    /// Read-only mount.
    pub read_only: bool,
}

/// A network of a task group.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkResource {
    /// Network mode (`host`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Static host ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reserved_ports: Vec<Port>,
}

/// A port of a network.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Port {
    /// The label services and drivers refer to.
    pub label: String,
    /// The host port.
    pub value: u16,
    /// Shared with another allocation on the node (Nomad 1.9+): both handover slots reserve the
    /// public ports, and the proxies bind them with `SO_REUSEPORT` (`reusePort`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_collision: bool,
}

/// A service registration.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    /// Service name.
    pub name: String,
    /// `nomad` or `consul`.
    pub provider: String,
    /// The port label the service advertises.
    pub port_label: String,
    /// Explicit address (loopback when the port is bound to loopback only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Health checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ServiceCheck>,
}

/// A service health check.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceCheck {
    /// Check name.
    pub name: String,
    /// `http` or `tcp`.
    #[serde(rename = "Type")]
    pub check_type: String,
    /// HTTP path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Interval in nanoseconds.
    pub interval: i64,
    /// Timeout in nanoseconds.
    pub timeout: i64,
}

/// How much longer Nomad waits after the kill signal than the proxy's drain: it holds
/// Traefik's `requestAcceptGraceTimeout` (the accepting before the drain) with room to spare.
pub const KILL_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);
const _: () = assert!(
    super::traefik::REQUEST_ACCEPT_GRACE.as_secs() < KILL_TIMEOUT_MARGIN.as_secs(),
    "kill_timeout must outlast requestAcceptGraceTimeout + graceTimeOut"
);

/// A task.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    /// Task name.
    pub name: String,
    /// `docker`, `raw_exec` or `exec`.
    pub driver: String,
    /// Driver-specific configuration (free-form, snake_case keys as the driver expects).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Environment variables.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Templates rendered into the task directory.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
    /// Time between the kill signal and a forced kill, in nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_timeout: Option<i64>,
    /// Group volumes mounted into the task.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// The task's default workload identity, exposed as `NOMAD_TOKEN` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<WorkloadIdentity>,
    /// Further identities (`consul_default` logs the task in to Consul).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<WorkloadIdentity>,
}

/// A workload identity of a task (`identity` block).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct WorkloadIdentity {
    /// `default` (empty) or e.g. `consul_default`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// JWT audiences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// What Nomad does when the identity is renewed (`restart`, `signal`, `noop`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub change_mode: String,
    /// Exposes the JWT as `NOMAD_TOKEN` in the task's environment.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub env: bool,
    /// Lifetime in nanoseconds (0: Nomad's default).
    #[serde(rename = "TTL", skip_serializing_if = "is_zero")]
    pub ttl: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// CPU and memory of a task.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    /// CPU in MHz.
    #[serde(rename = "CPU")]
    pub cpu: u32,
    /// Memory in MiB.
    #[serde(rename = "MemoryMB")]
    pub memory_mb: u32,
}

/// A template rendered by Nomad into the task directory.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Template {
    /// The literal data.
    pub embedded_tmpl: String,
    /// Destination relative to the task directory.
    pub dest_path: String,
    /// `restart`, `signal`, `noop` or `script`.
    pub change_mode: String,
    /// File mode.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub perms: String,
    /// Left template delimiter; chosen so the literal data holds no template action.
    pub left_delim: String,
    /// Right template delimiter.
    pub right_delim: String,
    /// Read the rendered `KEY=value` lines into the task's environment.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub envvars: bool,
}

/// A restart policy.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// Restarts allowed within `interval`.
    pub attempts: u32,
    /// Window in nanoseconds.
    pub interval: i64,
    /// Delay between restarts in nanoseconds.
    pub delay: i64,
    /// `fail` or `delay`.
    pub mode: String,
}

/// An update strategy.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStrategy {
    /// Allocations updated at once.
    pub max_parallel: u32,
    /// `checks`, `task_states` or `manual`.
    pub health_check: String,
    /// Time an allocation must stay healthy, in nanoseconds.
    pub min_healthy_time: i64,
    /// Deadline for an allocation to become healthy, in nanoseconds.
    pub healthy_deadline: i64,
    /// Deadline for the deployment to make progress, in nanoseconds.
    pub progress_deadline: i64,
    /// Whether Nomad reverts by itself; the operator owns rollback, so it is false.
    pub auto_revert: bool,
}

// === the proxy job ===

use super::model::{Driver, ListenAddr, Model, ProxyKind, TokenSource};

mod slot;
mod tokens;
pub use slot::{META_SLOT, SLOT_B_PORT_OFFSET, Slot, SlotError, slot_job};
pub use tokens::{TOKENS_ENV_PATH, nomad_token_action};

/// Label of the internal port (Traefik's `traefik` entry point, Caddy's admin API).
pub const INTERNAL_PORT_LABEL: &str = "internal";
/// Label of Traefik's metrics port.
pub const METRICS_PORT_LABEL: &str = "metrics";
/// Template delimiters no rendered config contains, so Nomad copies the data literally. Traefik's
/// default rule carries `{{ normalize .Name }}`, which Nomad's default `{{ }}` would evaluate.
pub const LEFT_DELIM: &str = "[[proxy-operator:";
/// See [`LEFT_DELIM`].
pub const RIGHT_DELIM: &str = ":proxy-operator]]";

/// Name of the group volume holding the certificate directory.
pub const CERT_VOLUME: &str = "certs";

pub use crate::spec::port_label;

/// The Nomad service name for a job ID. Job IDs may hold `_` and `.` and run to 128
/// characters, but Nomad refuses a service name that is not an RFC 1123 label of at most 63
/// characters (`Service.ValidateName`), so the ID is mapped: other characters become `-`,
/// leading and trailing `-` go, and the result is cut to 63. A valid label stays as it is.
pub fn service_name(job_id: &str) -> String {
    let mapped: String = job_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut name: String = mapped.trim_matches('-').chars().take(63).collect();
    while name.ends_with('-') {
        name.pop();
    }
    if name.is_empty() {
        "proxy-operator".to_string()
    } else {
        name
    }
}

/// The config file the proxy reads, as rendered into the task directory.
pub struct ConfigFile<'a> {
    /// File name inside `local/`.
    pub name: &'a str,
    /// Literal content.
    pub data: &'a str,
}

fn check_host(addr: &ListenAddr) -> String {
    if addr.host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        addr.host.clone()
    }
}

/// Builds the proxy's job (without the ownership Meta, which `render` stamps on).
pub fn proxy_job(model: &Model, config: &ConfigFile<'_>) -> Result<Job, super::Error> {
    let tokens = model.job.tokens.as_ref();
    let token_action = tokens::config_token_action(model, config)?;
    let r = &model.rollout;
    if r.min_healthy_time >= r.healthy_deadline {
        return Err(super::Error::InvalidValue {
            field: "rollout.minHealthyTime".to_string(),
            reason: "must be shorter than rollout.healthyDeadline (Nomad rejects the job)"
                .to_string(),
        });
    }
    let job_settings = &model.job;
    // Traefik is handed over (two slots side by side on the same ports); Caddy is restarted.
    let handover = model.proxy == ProxyKind::Traefik;

    let mut ports: Vec<Port> = model
        .entry_points
        .iter()
        .map(|ep| Port {
            label: port_label(&ep.name),
            value: ep.address.port,
            ignore_collision: handover,
        })
        .collect();
    ports.push(Port {
        label: INTERNAL_PORT_LABEL.to_string(),
        value: model.dashboard.address.port,
        // Each slot has its own: the gate reads the new instance, never the old one.
        ignore_collision: false,
    });
    if let (ProxyKind::Traefik, Some(metrics)) = (model.proxy, &model.metrics) {
        ports.push(Port {
            label: METRICS_PORT_LABEL.to_string(),
            value: metrics.port,
            ignore_collision: handover,
        });
    }

    let (check_name, check_path) = match model.proxy {
        ProxyKind::Traefik => ("ping", "/ping"),
        ProxyKind::Caddy => ("admin", "/config/"),
    };
    // Nomad refuses a group with two ports of one label or two reservations of one static port
    // (whatever the host address: it reserves host ports). Validation refuses these documents;
    // this guards models built another way.
    for (i, port) in ports.iter().enumerate() {
        if let Some(other) = ports[..i]
            .iter()
            .find(|p| p.label == port.label || p.value == port.value)
        {
            return Err(super::Error::InvalidValue {
                field: "entryPoints".to_string(),
                reason: format!(
                    "ports {:?} ({}) and {:?} ({}) collide: Nomad needs unique port labels and static ports",
                    other.label, other.value, port.label, port.value
                ),
            });
        }
    }

    let service = Service {
        name: service_name(&job_settings.id),
        provider: "nomad".to_string(),
        port_label: INTERNAL_PORT_LABEL.to_string(),
        address: if model.dashboard.address.is_loopback() {
            check_host(&model.dashboard.address)
        } else {
            String::new()
        },
        tags: vec!["proxy-operator".to_string()],
        checks: vec![ServiceCheck {
            name: check_name.to_string(),
            check_type: "http".to_string(),
            path: check_path.to_string(),
            // The check feeds the rollout gate: a 10 s interval made every structural rollout wait
            // ~12 s for its first passing check. /ping on loopback is cheap, so check often.
            interval: nanos(PROXY_CHECK_INTERVAL),
            timeout: nanos(PROXY_CHECK_TIMEOUT),
        }],
    };

    // A config that renders a token lives in `secrets/` (per task, not in the shared alloc
    // directory, and a tmpfs where the driver supports it).
    let (dir, dir_var, perms) = if token_action.is_some() {
        ("secrets", "NOMAD_SECRETS_DIR", "0600")
    } else {
        ("local", "NOMAD_TASK_DIR", "0644")
    };
    let (local_path, docker_path) = (
        format!("{dir}/{}", config.name),
        format!("/{dir}/{}", config.name),
    );
    let task_dir_path = format!("${{{dir_var}}}/{}", config.name);
    let proxy_args = |path: &str| -> Vec<String> {
        match model.proxy {
            ProxyKind::Traefik => vec![format!("--configfile={path}")],
            // `--resume`: a Caddy restarted in this allocation starts from the config the
            // operator loaded last (autosaved under XDG_CONFIG_HOME, below), holding its routes;
            // the file is only the first start's config (caddy `cmd/commandfuncs.go`).
            ProxyKind::Caddy => vec![
                "run".to_string(),
                "--config".to_string(),
                path.to_string(),
                "--resume".to_string(),
            ],
        }
    };
    let mut cfg = serde_json::Map::new();
    let driver = match &job_settings.driver {
        Driver::Docker { image } => {
            cfg.insert("image".into(), image.clone().into());
            // A proxy holds two descriptors per proxied connection. Docker's `ulimit` block
            // (a list of maps in the JSON API) sets soft and hard; raw_exec and exec have no
            // such option and inherit the Nomad client's limit (see `spec.job.openFiles`).
            let nofile = format!("{0}:{0}", job_settings.open_files);
            cfg.insert("ulimit".into(), serde_json::json!([{ "nofile": nofile }]));
            // Nomad's docker driver sets only Cmd from `args` when `command` is empty, and the
            // official caddy image has no ENTRYPOINT: Docker would try to exec `run`. Name the
            // binary for both proxies rather than rely on traefik's entrypoint script.
            cfg.insert(
                "command".into(),
                match model.proxy {
                    ProxyKind::Traefik => "traefik",
                    ProxyKind::Caddy => "caddy",
                }
                .into(),
            );
            cfg.insert("args".into(), proxy_args(&docker_path).into());
            // Static host ports and the loopback-only internal entry point need the host's
            // network namespace.
            cfg.insert("network_mode".into(), "host".into());
            "docker"
        }
        Driver::RawExec { command, args } | Driver::Exec { command, args } => {
            let path = if matches!(job_settings.driver, Driver::RawExec { .. }) {
                &local_path
            } else {
                &task_dir_path
            };
            // The spec's arguments come first, then the config file flags the operator owns.
            let mut all = args.clone();
            all.extend(proxy_args(path));
            cfg.insert("command".into(), command.clone().into());
            cfg.insert("args".into(), all.into());
            if matches!(job_settings.driver, Driver::RawExec { .. }) {
                "raw_exec"
            } else {
                "exec"
            }
        }
    };

    // The certificate directory (certificate files, ACME storage) must exist in the container
    // or chroot and outlive the allocation: a host volume mounted at the same path. raw_exec
    // runs on the host, where certDir already is the host path.
    let cert_volume = match job_settings.driver {
        Driver::RawExec { .. } => None,
        Driver::Docker { .. } | Driver::Exec { .. } => job_settings.cert_volume.clone(),
    };
    let mut env = BTreeMap::new();
    if model.proxy == ProxyKind::Caddy {
        // Caddy autosaves its config under XDG_CONFIG_HOME; keep it in the task directory,
        // which outlives a task restart in the same allocation (`--resume` reads it).
        env.insert(
            "XDG_CONFIG_HOME".to_string(),
            "${NOMAD_TASK_DIR}".to_string(),
        );
        env.insert("XDG_DATA_HOME".to_string(), "${NOMAD_TASK_DIR}".to_string());
    }
    if let Some(acme) = model.tls.acme.as_ref().filter(|a| !a.ca_roots.is_empty())
        && model.proxy == ProxyKind::Traefik
    {
        // lego, Traefik's ACME client, trusts the PEM files in LEGO_CA_CERTIFICATES (':'
        // separated) *instead of* the system roots unless LEGO_CA_SYSTEM_CERT_POOL is set.
        env.insert("LEGO_CA_CERTIFICATES".to_string(), acme.ca_roots.join(":"));
        env.insert("LEGO_CA_SYSTEM_CERT_POOL".to_string(), "true".to_string());
    }

    let mut templates = vec![Template {
        embedded_tmpl: config.data.to_string(),
        dest_path: local_path.clone(),
        change_mode: "restart".to_string(),
        perms: perms.to_string(),
        left_delim: LEFT_DELIM.to_string(),
        right_delim: RIGHT_DELIM.to_string(),
        envvars: false,
    }];
    let (identity, identities) = match tokens {
        Some(TokenSource::WorkloadIdentity) => {
            let (default, more) = tokens::workload_identities();
            (Some(default), more)
        }
        // nomadVar reads with the task's default identity, which every task has.
        Some(TokenSource::NomadVariable { .. }) | None => (None, Vec::new()),
    };
    templates.extend(tokens.map(tokens::consul_token_template));

    let task = Task {
        name: match model.proxy {
            ProxyKind::Traefik => "traefik".to_string(),
            ProxyKind::Caddy => "caddy".to_string(),
        },
        driver: driver.to_string(),
        config: cfg,
        env,
        resources: Some(Resources {
            cpu: job_settings.cpu,
            memory_mb: job_settings.memory_mb,
        }),
        templates,
        // Longer than the entry points' requestAcceptGraceTimeout and graceTimeOut together
        // (the margin holds the first), so Nomad never SIGKILLs a proxy still draining.
        kill_timeout: Some(nanos(model.transport.grace_timeout + KILL_TIMEOUT_MARGIN)),
        volume_mounts: cert_volume
            .iter()
            .map(|_| VolumeMount {
                volume: CERT_VOLUME.to_string(),
                destination: model.tls.cert_dir.clone(),
                read_only: false,
            })
            .collect(),
        identity,
        identities,
    };

    let healthy = nanos(r.healthy_deadline);
    let progress =
        nanos(Duration::from_secs(600)).max(healthy.saturating_add(nanos(Duration::from_secs(60))));
    Ok(Job {
        id: job_settings.id.clone(),
        name: job_settings.id.clone(),
        job_type: if job_settings.system {
            "system"
        } else {
            "service"
        }
        .to_string(),
        namespace: job_settings.namespace.clone(),
        region: job_settings.region.clone(),
        datacenters: job_settings.datacenters.clone(),
        node_pool: job_settings.node_pool.clone(),
        task_groups: vec![TaskGroup {
            name: "proxy".to_string(),
            count: (!job_settings.system).then_some(job_settings.count),
            networks: vec![NetworkResource {
                mode: "host".to_string(),
                reserved_ports: ports,
            }],
            services: vec![service],
            tasks: vec![task],
            restart_policy: Some(RestartPolicy {
                attempts: 2,
                interval: nanos(Duration::from_secs(300)),
                delay: nanos(PROXY_RESTART_DELAY),
                // Fail fast so the health gate sees a broken config instead of a restart loop.
                mode: "fail".to_string(),
            }),
            volumes: cert_volume
                .iter()
                .map(|source| {
                    (
                        CERT_VOLUME.to_string(),
                        VolumeRequest {
                            name: CERT_VOLUME.to_string(),
                            volume_type: "host".to_string(),
                            source: source.clone(),
                            read_only: false,
                        },
                    )
                })
                .collect(),
        }],
        update: Some(UpdateStrategy {
            max_parallel: 1,
            health_check: "checks".to_string(),
            min_healthy_time: nanos(r.min_healthy_time),
            healthy_deadline: healthy,
            progress_deadline: progress,
            auto_revert: false,
        }),
        meta: if handover {
            BTreeMap::from([(slot::META_SLOT.to_string(), Slot::A.name().to_string())])
        } else {
            BTreeMap::new()
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;

    fn job_for(driver: &str) -> serde_json::Value {
        let doc = format!(
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n  tls: {{certDir: /pv/CERTS}}\n  job:\n    certVolume: pv-certs\n{driver}"
        );
        let spec = crate::spec::load(doc.as_bytes()).unwrap();
        crate::render::render(&spec, &crate::render::RenderContext::default())
            .unwrap()
            .job
    }

    #[test]
    fn docker_and_exec_jobs_mount_the_cert_volume_at_cert_dir_and_raw_exec_uses_the_host_path() {
        for driver in ["", "    driver: {exec: {command: /usr/bin/caddy}}\n"] {
            let job = job_for(driver);
            let group = &job["TaskGroups"][0];
            assert_eq!(
                group["Volumes"][CERT_VOLUME],
                serde_json::json!({"Name": "certs", "Type": "host", "Source": "pv-certs", "ReadOnly": false}),
                "{driver}"
            );
            assert_eq!(
                group["Tasks"][0]["VolumeMounts"],
                serde_json::json!([{"Volume": "certs", "Destination": "/pv/CERTS", "ReadOnly": false}]),
                "{driver}"
            );
        }
        let job = job_for("    driver: {rawExec: {command: /usr/bin/caddy}}\n");
        assert!(job["TaskGroups"][0].get("Volumes").is_none(), "{job}");
        assert!(
            job["TaskGroups"][0]["Tasks"][0]
                .get("VolumeMounts")
                .is_none()
        );
    }

    #[test]
    fn a_caddy_and_a_traefik_are_restarted_after_one_second() {
        let delay = |job: &serde_json::Value| {
            job["TaskGroups"][0]["RestartPolicy"]["Delay"]
                .as_i64()
                .unwrap()
        };
        assert_eq!(delay(&job_for("")), 1_000_000_000);
        let doc =
            "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n";
        let spec = crate::spec::load(doc.as_bytes()).unwrap();
        let traefik = crate::render::render(&spec, &crate::render::RenderContext::default())
            .unwrap()
            .job;
        assert_eq!(delay(&traefik), 1_000_000_000);
    }

    #[test]
    fn service_names_are_rfc_1123_labels_nomad_accepts() {
        assert_eq!(service_name("traefik"), "traefik");
        assert_eq!(service_name("my_proxy"), "my-proxy");
        assert_eq!(service_name("proxy.edge"), "proxy-edge");
        assert_eq!(service_name("_x_"), "x");
        assert_eq!(service_name("__"), "proxy-operator");
        let long = format!("{}_{}", "a".repeat(62), "b".repeat(60));
        let name = service_name(&long);
        assert_eq!(name.len(), 62, "{name}");
        assert!(!name.ends_with('-'));
        let name = service_name(&"x".repeat(128));
        assert_eq!(name.len(), 63);
    }
}
