//! Preflight: what can be known about a new proxy version before the running one is touched.
//!
//! A structural change stops the running proxy (or, with a handover, starts a second one beside
//! it). Anything that will certainly make the new version fail is checked first, so a bad edit
//! costs nothing: the document is reported `Invalid` with the field to fix, and nothing is
//! written to Nomad or the proxy.
//!
//! - **Ports.** Every static port of the new job is free, or held by the job version running now
//!   (its own allocation holds it, and gives it up when replaced). The operator can only try to
//!   bind ports on its own host, so the check runs only when the proxy is reached on a loopback
//!   address (`proxy-operator dev`, the twin, where every node is this host). On a real cluster
//!   the proxy's nodes are other hosts: there the check is skipped, and Nomad's own placement
//!   (which refuses a static port another allocation reserved, but knows nothing of a process
//!   outside Nomad holding it) and the fail-fast gate are what catch a taken port.
//! - **Certificates.** Each `spec.tls.certificates` pair exists, parses as PEM X.509, the key
//!   matches the certificate and it has not expired. The paths are the task's: the operator sees
//!   them only with `raw_exec`, where the task runs on the host with host paths, and only when it
//!   runs on that host; with docker or exec they live in a host volume on the proxy's node and
//!   are not checked.
//! - **Host volumes.** Every host volume a task group of the new job mounts (`Volumes[].Source`
//!   with `Type = "host"`: `spec.job.certVolume` for docker and exec) is in the `HostVolumes` of
//!   every node the job can be placed on: ready, eligible, not draining, in one of the job's
//!   datacenters (Nomad's `*` glob) and its node pool (`all`: any). One `GET /v1/nodes` answers
//!   it (the list stub carries `HostVolumes`). A volume the running version mounts too is not
//!   held against a node that lacks it: the proxy does not run there today either. What cannot
//!   be known remotely: whether the volume's host path exists, is writable by the task, and
//!   holds the certificates (the client fingerprints only its config); a dynamic host volume
//!   still being created; constraints beyond datacenter and pool (the operator renders none).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use crate::metrics::certificates_from_pem;
use crate::nomad::NodeStub;
use crate::nomad::roles::NomadNodes;
use crate::spec::{FieldError, ValidatedSpec};
use crate::transport::QueryOptions;

/// Every static host port a Nomad job reserves (`TaskGroups[].Networks[].ReservedPorts[].Value`).
/// Pure.
#[must_use]
pub fn static_ports(job: &Value) -> BTreeSet<u16> {
    let job = crate::nomad::unwrap_job(job);
    let groups = job.get("TaskGroups").and_then(Value::as_array);
    groups
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("Networks").and_then(Value::as_array))
        .flatten()
        .filter_map(|n| n.get("ReservedPorts").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| p.get("Value").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .collect()
}

/// Whether ports on `host` can be checked from here: only a loopback proxy is on this host.
#[must_use]
pub fn ports_checkable(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The ports of `wanted` that something other than the running job holds on this host. A port
/// the running job reserves (`running`) is its own allocation's and is not tried. A port that
/// cannot be bound for another reason than being in use (privileged ports without the
/// capability) is not reported: nothing is known about it.
#[must_use]
pub fn taken_ports(wanted: &BTreeSet<u16>, running: &BTreeSet<u16>) -> Vec<u16> {
    // Two probes of one port at once would each see the other's bind as a listener. One
    // operator never races itself, but tests run many operators in one process.
    static ONE_PROBE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _probing = ONE_PROBE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    wanted
        .difference(running)
        .copied()
        .filter(|port| {
            // The proxy listens on every address; a listener on any of them conflicts, and
            // binding the wildcard address is what finds it.
            matches!(
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, *port)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
            )
        })
        .collect()
}

/// What makes the new version of `job` fail before it starts, as field errors naming what to
/// fix; empty when nothing is known to be wrong. `running` are the jobs of ours running now
/// (the serving slot, and during a handover the other one); `host` is where the operator
/// reaches the proxy; `now` is unix seconds.
#[must_use]
pub fn check(
    spec: &ValidatedSpec,
    job: &Value,
    running: &[Value],
    host: &str,
    now: i64,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if ports_checkable(host) {
        let running: BTreeSet<u16> = running.iter().flat_map(static_ports).collect();
        for port in taken_ports(&static_ports(job), &running) {
            let field = spec
                .entry_points()
                .iter()
                .find(|e| e.address.port == port)
                .map_or_else(
                    || "spec.job".to_owned(),
                    |e| format!("spec.entryPoints.{}.address", e.name),
                );
            errors.push(FieldError::new(
                field,
                format!(
                    "port {port} is already in use on {host} by something other than the running proxy job; \
                     free it or choose another port (nothing was changed, the running proxy keeps serving)"
                ),
            ));
        }
    }
    if matches!(spec.driver(), crate::spec::Driver::RawExec(_)) {
        for (i, pair) in spec.certificates().iter().enumerate() {
            if let Err(why) = check_pair(Path::new(&pair.cert_file), Path::new(&pair.key_file), now)
            {
                errors.push(FieldError::new(
                    format!("spec.tls.certificates[{i}]"),
                    format!("{why}; nothing was changed, the running proxy keeps serving"),
                ));
            }
        }
    }
    errors
}

/// The host volumes (`Source` of each `Type = "host"` group volume) a Nomad job mounts. Pure.
#[must_use]
pub fn host_volume_sources(job: &Value) -> BTreeSet<String> {
    let job = crate::nomad::unwrap_job(job);
    let groups = job.get("TaskGroups").and_then(Value::as_array);
    groups
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("Volumes").and_then(Value::as_object))
        .flat_map(|volumes| volumes.values())
        .filter(|v| v.get("Type").and_then(Value::as_str) == Some("host"))
        .filter_map(|v| v.get("Source").and_then(Value::as_str))
        .filter(|source| !source.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Nomad's datacenter glob (`go-glob`): `*` matches any run of characters, nothing else is
/// special.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether the scheduler may place `job` on `node`: schedulable, in one of the job's
/// datacenters (none: all, as Nomad defaults to `["*"]`) and in its node pool (none:
/// `default`; `all`: every pool).
fn placeable(job: &Value, node: &NodeStub) -> bool {
    let job = crate::nomad::unwrap_job(job);
    let datacenters: Vec<&str> = job
        .get("Datacenters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let in_datacenter = datacenters.is_empty()
        || datacenters
            .iter()
            .any(|dc| glob_match(dc, &node.datacenter));
    let pool = job
        .get("NodePool")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("default");
    let node_pool = if node.node_pool.is_empty() {
        "default"
    } else {
        node.node_pool.as_str()
    };
    node.schedulable() && in_datacenter && (pool == "all" || pool == node_pool)
}

/// How many nodes a message names before it counts the rest.
const NODES_NAMED: usize = 3;

/// The host volumes of `job` that a node it can be placed on does not have, one error per
/// volume naming the nodes and the fix; empty when every node has them. A volume the running
/// version (`running`) mounts too is not reported: a node without it runs no proxy today
/// either. Pure.
#[must_use]
pub fn missing_host_volumes(job: &Value, running: &[Value], nodes: &[NodeStub]) -> Vec<FieldError> {
    let already: BTreeSet<String> = running.iter().flat_map(host_volume_sources).collect();
    let placeable: Vec<&NodeStub> = nodes.iter().filter(|n| placeable(job, n)).collect();
    let mut errors = Vec::new();
    for volume in host_volume_sources(job).difference(&already) {
        let lacking: Vec<&&NodeStub> = placeable
            .iter()
            .filter(|n| !n.host_volumes.contains_key(volume))
            .collect();
        if lacking.is_empty() {
            continue;
        }
        let mut named: Vec<String> = lacking
            .iter()
            .take(NODES_NAMED)
            .map(|n| {
                let id: String = n.id.chars().take(8).collect();
                format!("{} ({id}, datacenter {})", n.name, n.datacenter)
            })
            .collect();
        if lacking.len() > NODES_NAMED {
            named.push(format!("{} more", lacking.len() - NODES_NAMED));
        }
        errors.push(FieldError::new(
            "spec.job.certVolume",
            format!(
                "Nomad host volume {volume:?} does not exist on node {}, where the proxy job can be placed; \
                 add host_volume \"{volume}\" {{ path = \"...\" }} to that node's Nomad client config and restart \
                 the client, or name a volume the nodes have, or narrow spec.job.datacenters or spec.job.nodePool \
                 (nothing was changed, the running proxy keeps serving)",
                named.join(", ")
            ),
        ));
    }
    errors
}

/// [`missing_host_volumes`] against the nodes Nomad lists now. Asks Nomad only when the job
/// mounts a host volume; an error is Nomad's, and nothing is known then.
///
/// # Errors
///
/// The node list could not be read.
pub async fn host_volumes<N: NomadNodes>(
    nomad: &N,
    job: &Value,
    running: &[Value],
) -> Result<Vec<FieldError>, crate::nomad::Error> {
    if host_volume_sources(job).is_empty() {
        return Ok(Vec::new());
    }
    let (nodes, _) = nomad.nodes(QueryOptions::NOW).await?;
    Ok(missing_host_volumes(job, running, &nodes))
}

/// A certificate and key file pair: both read, the certificate parses and has not expired, and
/// the key is the certificate's. The key is never part of the message.
fn check_pair(cert_file: &Path, key_file: &Path, now: i64) -> Result<(), String> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| format!("{what} {} cannot be read: {e}", path.display()))
    };
    let cert_pem = read(cert_file, "certificate file")?;
    let key_pem = read(key_file, "key file")?;
    let certs = certificates_from_pem(&cert_pem).map_err(|e| {
        format!(
            "certificate file {} does not parse: {e}",
            cert_file.display()
        )
    })?;
    let Some(leaf) = certs.first() else {
        return Err(format!(
            "certificate file {} holds no certificate",
            cert_file.display()
        ));
    };
    if leaf.not_after < now {
        return Err(format!(
            "the certificate in {} expired (notAfter {} unix seconds)",
            cert_file.display(),
            leaf.not_after
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| format!("key file {} holds no PEM private key", key_file.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| format!("key file {} holds an unsupported key", key_file.display()))?;
    let matches = signer
        .public_key()
        .is_some_and(|spki| spki.as_ref() == leaf.public_key_der.as_slice());
    if !matches {
        return Err(format!(
            "key file {} does not belong to the certificate in {}",
            key_file.display(),
            cert_file.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    fn job(ports: &[u16]) -> Value {
        let reserved: Vec<Value> = ports
            .iter()
            .map(|p| serde_json::json!({"Label": format!("p{p}"), "Value": p}))
            .collect();
        serde_json::json!({"Job": {"ID": "proxy", "TaskGroups": [
            {"Networks": [{"Mode": "host", "ReservedPorts": reserved}]}
        ]}})
    }

    #[test]
    fn static_ports_are_read_from_every_group_network() {
        assert_eq!(
            static_ports(&job(&[80, 443])),
            [80, 443].into_iter().collect()
        );
        assert!(static_ports(&serde_json::json!({"ID": "x"})).is_empty());
    }

    #[test]
    fn a_port_another_process_holds_is_taken_and_one_the_running_job_holds_is_not() {
        let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let free = {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let wanted: BTreeSet<u16> = [port, free].into_iter().collect();
        assert_eq!(taken_ports(&wanted, &BTreeSet::new()), vec![port]);
        assert!(taken_ports(&wanted, &[port].into_iter().collect()).is_empty());
    }

    #[test]
    fn a_port_either_running_slot_holds_is_not_in_the_way() {
        // A handover cut short: the newer slot's own API port is held by that slot, which the
        // change registers over.
        let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let api = held.local_addr().unwrap().port();
        let spec = crate::spec::load(
            b"apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: traefik\n",
        )
        .unwrap();
        let new = job(&[api]);
        let serving = job(&[]);
        let errors = check(&spec, &new, std::slice::from_ref(&serving), "127.0.0.1", 0);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.starts_with(&format!("port {api} ")),
            "{errors:?}"
        );
        let newer = job(&[api]);
        assert!(check(&spec, &new, &[serving, newer], "127.0.0.1", 0).is_empty());
    }

    #[test]
    fn a_loopback_listener_is_found_by_the_wildcard_bind() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        assert_eq!(
            taken_ports(&[port].into_iter().collect(), &BTreeSet::new()),
            vec![port]
        );
    }

    #[test]
    fn ports_are_checked_only_on_a_loopback_proxy() {
        assert!(ports_checkable("127.0.0.1"));
        assert!(ports_checkable("localhost"));
        assert!(ports_checkable("::1"));
        assert!(!ports_checkable("10.0.0.5"));
        assert!(!ports_checkable("proxy.internal"));
    }

    fn volume_job(volume: &str, datacenters: &[&str], pool: Option<&str>) -> Value {
        let mut job = serde_json::json!({"ID": "proxy", "Datacenters": datacenters, "TaskGroups": [{
            "Volumes": {"certs": {"Name": "certs", "Type": "host", "Source": volume, "ReadOnly": false}}
        }]});
        if let Some(pool) = pool {
            job["NodePool"] = serde_json::json!(pool);
        }
        job
    }

    fn node(name: &str, dc: &str, volumes: &[&str]) -> NodeStub {
        NodeStub {
            id: format!("{name}-0000-1111"),
            name: name.to_owned(),
            datacenter: dc.to_owned(),
            node_pool: "default".to_owned(),
            status: "ready".to_owned(),
            scheduling_eligibility: "eligible".to_owned(),
            drain: false,
            host_volumes: volumes
                .iter()
                .map(|v| ((*v).to_owned(), crate::nomad::HostVolumeInfo::default()))
                .collect(),
        }
    }

    #[test]
    fn only_host_volume_sources_are_requested_volumes() {
        let mut mounts = volume_job("edge-certs", &["*"], None);
        mounts["TaskGroups"][0]["Volumes"]["csi"] =
            serde_json::json!({"Type": "csi", "Source": "ebs"});
        assert_eq!(
            host_volume_sources(&serde_json::json!({"Job": mounts})),
            ["edge-certs".to_owned()].into_iter().collect()
        );
        assert!(host_volume_sources(&job(&[80])).is_empty());
    }

    #[test]
    fn a_volume_missing_on_a_node_the_job_can_use_names_the_volume_the_node_and_the_fix() {
        let job = volume_job("certs", &["*"], None);
        let nodes = [
            node("edge-1", "dc1", &["certs"]),
            node("edge-2", "dc1", &[]),
        ];
        let errors = missing_host_volumes(&job, &[], &nodes);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.job.certVolume");
        let text = &errors[0].message;
        assert!(text.contains("\"certs\""), "{text}");
        assert!(text.contains("edge-2 (edge-2-0"), "{text}");
        assert!(!text.contains("edge-1"), "{text}");
        assert!(text.contains("host_volume \"certs\""), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
        assert!(missing_host_volumes(&job, &[], &nodes[..1]).is_empty());
    }

    #[test]
    fn nodes_outside_the_jobs_datacenters_pool_or_schedule_are_not_held_against_it() {
        let nodes = [
            node("edge-1", "edge-west", &["certs"]),
            node("app-1", "apps", &[]),
        ];
        assert!(
            missing_host_volumes(&volume_job("certs", &["edge-*"], None), &[], &nodes).is_empty()
        );
        assert_eq!(
            missing_host_volumes(&volume_job("certs", &["*"], None), &[], &nodes).len(),
            1
        );
        assert_eq!(
            missing_host_volumes(&volume_job("certs", &[], None), &[], &nodes).len(),
            1,
            "no datacenters is every datacenter"
        );

        let mut pooled = nodes.clone();
        pooled[1].node_pool = "apps".to_owned();
        let job = volume_job("certs", &["*"], None);
        assert!(missing_host_volumes(&job, &[], &pooled).is_empty());
        let all = volume_job("certs", &["*"], Some("all"));
        assert_eq!(missing_host_volumes(&all, &[], &pooled).len(), 1);

        for unschedulable in [
            NodeStub {
                status: "down".into(),
                ..nodes[1].clone()
            },
            NodeStub {
                scheduling_eligibility: "ineligible".into(),
                ..nodes[1].clone()
            },
            NodeStub {
                drain: true,
                ..nodes[1].clone()
            },
        ] {
            let nodes = [nodes[0].clone(), unschedulable];
            assert!(
                missing_host_volumes(&job, &[], &nodes).is_empty(),
                "{nodes:?}"
            );
        }
    }

    #[test]
    fn a_volume_the_running_version_mounts_too_is_not_a_new_absence() {
        let nodes = [node("edge-1", "dc1", &["certs"]), node("app-1", "dc1", &[])];
        let running = volume_job("certs", &["*"], None);
        assert!(missing_host_volumes(&running, std::slice::from_ref(&running), &nodes).is_empty());
        let renamed = volume_job("edge-certs", &["*"], None);
        let errors = missing_host_volumes(&renamed, std::slice::from_ref(&running), &nodes);
        assert_eq!(
            errors.len(),
            1,
            "a new volume is checked on every node: {errors:?}"
        );
    }

    #[test]
    fn many_lacking_nodes_are_counted_after_the_first_few() {
        let nodes: Vec<NodeStub> = (0..7).map(|i| node(&format!("n{i}"), "dc1", &[])).collect();
        let errors = missing_host_volumes(&volume_job("certs", &["*"], None), &[], &nodes);
        assert!(errors[0].message.contains("n2 ("), "{}", errors[0].message);
        assert!(!errors[0].message.contains("n3 ("), "{}", errors[0].message);
        assert!(
            errors[0].message.contains("4 more"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn datacenter_globs_match_as_nomads_do() {
        assert!(glob_match("*", "dc1"));
        assert!(glob_match("dc1", "dc1"));
        assert!(!glob_match("dc1", "dc12"));
        assert!(glob_match("edge-*", "edge-west"));
        assert!(glob_match("*-west", "edge-west"));
        assert!(glob_match("e*g*t", "edge-west"));
        assert!(!glob_match("edge-*", "apps"));
        assert!(!glob_match("a*a", "a"));
    }

    fn write_pair(dir: &Path, expired: bool) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params = rcgen::CertificateParams::new(vec!["app.example.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = if expired {
            rcgen::date_time_ymd(2021, 1, 1)
        } else {
            rcgen::date_time_ymd(2099, 1, 1)
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_valid_matching_pair_passes_and_every_broken_pair_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000; // 2027
        let (cert, key) = write_pair(dir.path(), false);
        check_pair(&cert, &key, now).unwrap();

        let err = check_pair(&dir.path().join("missing.pem"), &key, now).unwrap_err();
        assert!(err.contains("cannot be read"), "{err}");

        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_pair(other.path(), false);
        let err = check_pair(&cert, &other_key, now).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");

        let gone = tempfile::tempdir().unwrap();
        let (expired, expired_key) = write_pair(gone.path(), true);
        let err = check_pair(&expired, &expired_key, now).unwrap_err();
        assert!(err.contains("expired"), "{err}");

        std::fs::write(dir.path().join("junk.pem"), "not pem").unwrap();
        let err = check_pair(&dir.path().join("junk.pem"), &key, now).unwrap_err();
        assert!(err.contains("does not parse"), "{err}");
        let key_text = std::fs::read_to_string(&key).unwrap();
        assert!(
            !err.contains(key_text.lines().nth(1).unwrap()),
            "no key material"
        );
    }
}
