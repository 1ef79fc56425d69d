//! Services and checks of an allocation: Nomad-native or Consul registration, and the
//! HTTP/TCP check loops whose results decide allocation health.

use super::*;
use crate::nomad::store::ServiceReg;
use serde_json::json;

#[derive(Clone, Debug)]
pub(super) struct Svc {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) provider: String,
    pub(super) tags: Vec<String>,
    pub(super) meta: Value,
    pub(super) address: String,
    pub(super) port: u16,
    pub(super) checks: Vec<Check>,
}

#[derive(Clone, Debug)]
pub(super) struct Check {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) path: String,
    pub(super) method: String,
    pub(super) protocol: String,
    pub(super) port: u16,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) initial: String,
    /// The node address the check connects to.
    pub(super) address: String,
}

pub(super) fn collect_services(sh: &Shared) -> Vec<Svc> {
    let mut out = Vec::new();
    let group_name = View::group(&sh.group).str("Name");
    let mut add = |svc: View<'_>, owner: String| {
        let name = svc.str("Name").to_string();
        let label = svc.str("PortLabel");
        let port = port_for(&sh.ports, label);
        let id = format!("_nomad-task-{}-{owner}-{name}-{label}", sh.alloc_id);
        let checks = svc
            .list("Checks")
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let check_label = if c.str("PortLabel").is_empty() {
                    label
                } else {
                    c.str("PortLabel")
                };
                let check_name = if c.str("Name").is_empty() {
                    format!("service: \"{name}\" check")
                } else {
                    c.str("Name").to_string()
                };
                Check {
                    id: format!("_nomad-check-{}-{owner}-{name}-{i}", sh.alloc_id),
                    name: check_name,
                    kind: c.str("Type").to_string(),
                    path: c.str("Path").to_string(),
                    method: c.str("Method").to_string(),
                    protocol: c.str("Protocol").to_string(),
                    port: port_for(&sh.ports, check_label),
                    interval: c.dur("Interval").max(Duration::from_millis(200)),
                    timeout: if c.dur("Timeout").is_zero() {
                        Duration::from_secs(2)
                    } else {
                        c.dur("Timeout")
                    },
                    address: sh.node.address.clone(),
                    initial: if c.str("InitialStatus").is_empty() {
                        "critical".into()
                    } else {
                        c.str("InitialStatus").into()
                    },
                }
            })
            .collect();
        out.push(Svc {
            id,
            name,
            provider: svc.str("Provider").to_string(),
            tags: svc.strs("Tags").into_iter().map(String::from).collect(),
            meta: svc.raw("Meta").cloned().unwrap_or(Value::Null),
            address: if svc.str("Address").is_empty() {
                sh.node.address.clone()
            } else {
                svc.str("Address").into()
            },
            port,
            checks,
        });
    };
    for svc in View::group(&sh.group).list("Services") {
        add(svc, format!("group-{group_name}"));
    }
    for t in View::group(&sh.group).list("Tasks") {
        for svc in t.list("Services") {
            add(svc, t.str("Name").to_string());
        }
    }
    out
}

pub(super) async fn register_service(
    sh: &Shared,
    svc: &Svc,
    statuses: &Arc<Mutex<BTreeMap<String, String>>>,
) {
    {
        let mut map = statuses.lock().unwrap_or_else(|p| p.into_inner());
        for c in &svc.checks {
            map.entry(c.id.clone()).or_insert_with(|| c.initial.clone());
        }
    }
    if svc.provider == "nomad" {
        let (node_id, dc) = (sh.node.id.clone(), sh.node.datacenter.clone());
        let reg = ServiceReg {
            id: svc.id.clone(),
            service_name: svc.name.clone(),
            namespace: View::job(&sh.job).str("Namespace").into(),
            node_id,
            datacenter: dc,
            job_id: View::job(&sh.job).str("ID").into(),
            alloc_id: sh.alloc_id.clone(),
            tags: svc.tags.clone(),
            address: svc.address.clone(),
            port: svc.port,
            create_index: 0,
            modify_index: 0,
        };
        sh.inner.write(|st| st.upsert_service(reg));
    } else {
        consul_register(sh, svc).await;
    }
}

pub(super) async fn deregister_service(sh: &Shared, svc: &Svc) {
    if svc.provider == "nomad" {
        sh.inner.write(|st| st.remove_service(&svc.id));
    } else {
        let path = format!("/v1/agent/service/deregister/{}", svc.id);
        let _ = consul_put(sh, &path, &Value::Null).await;
    }
}

pub(super) async fn consul_put(
    sh: &Shared,
    path: &str,
    body: &Value,
) -> Result<(), reqwest::Error> {
    let url = format!("http://{}{path}", sh.inner.config.consul_http_addr);
    let mut req = sh.inner.http.put(url);
    if !body.is_null() {
        req = req.json(body);
    }
    if let Some(token) = &sh.inner.config.acl_token {
        req = req.header("X-Consul-Token", token);
    }
    req.send().await?.error_for_status()?;
    Ok(())
}

/// Registers a `provider = "consul"` service with the local Consul agent, as Nomad's service
/// client does (SRC command/agent/consul/service_client.go `sync`: `ServiceRegisterOpts` on the
/// agent API, never the catalog). The agent then runs the HTTP/TCP checks itself and owns their
/// status; a check starts `critical` unless the job gives an `initial_status`, as in Consul.
pub(super) async fn consul_register(sh: &Shared, svc: &Svc) {
    let checks: Vec<Value> = svc
        .checks
        .iter()
        .map(|c| {
            let mut check = json!({
                "CheckID": c.id,
                "Name": c.name,
                "Status": c.initial,
                "Interval": go_duration(c.interval),
                "Timeout": go_duration(c.timeout),
            });
            if let Some(o) = check.as_object_mut() {
                if c.kind == "http" {
                    o.insert("HTTP".into(), json!(check_target(c)));
                    let method = if c.method.is_empty() {
                        "GET"
                    } else {
                        &c.method
                    };
                    o.insert("Method".into(), json!(method));
                } else {
                    o.insert("TCP".into(), json!(check_target(c)));
                }
            }
            check
        })
        .collect();
    let mut meta = svc.meta.clone();
    if meta.is_null() {
        meta = json!({});
    }
    if let Some(o) = meta.as_object_mut() {
        o.insert("external-source".into(), json!("nomad"));
    }
    let body = json!({
        "ID": svc.id,
        "Name": svc.name,
        "Tags": svc.tags,
        "Address": svc.address,
        "Port": svc.port,
        "Meta": meta,
        "Checks": checks,
    });
    if let Err(e) = consul_put(sh, "/v1/agent/service/register", &body).await {
        tracing::warn!(service = %svc.name, error = %e, "consul service registration failed");
    }
}

pub(super) fn check_target(c: &Check) -> String {
    if c.kind == "http" {
        let scheme = if c.protocol.is_empty() {
            "http"
        } else {
            &c.protocol
        };
        let path = if c.path.starts_with('/') {
            c.path.clone()
        } else {
            format!("/{}", c.path)
        };
        format!("{scheme}://{}:{}{path}", c.address, c.port)
    } else {
        format!("{}:{}", c.address, c.port)
    }
}

pub(super) async fn probe(inner: &Inner, c: &Check) -> bool {
    match c.kind.as_str() {
        "http" => {
            let method = reqwest::Method::from_bytes(if c.method.is_empty() {
                b"GET"
            } else {
                c.method.as_bytes()
            })
            .unwrap_or(reqwest::Method::GET);
            match inner
                .http
                .request(method, check_target(c))
                .timeout(c.timeout)
                .send()
                .await
            {
                Ok(resp) => resp.status().is_success(),
                Err(_) => false,
            }
        }
        "tcp" => matches!(
            tokio::time::timeout(
                c.timeout,
                tokio::net::TcpStream::connect((c.address.as_str(), c.port))
            )
            .await,
            Ok(Ok(_))
        ),
        // Script and gRPC checks are not run by the twin; they never pass.
        _ => false,
    }
}

pub(super) async fn run_check(
    sh: Shared,
    c: Check,
    statuses: Arc<Mutex<BTreeMap<String, String>>>,
) {
    loop {
        let passing = probe(&sh.inner, &c).await;
        let status = if passing { "passing" } else { "critical" };
        // Allocation health only: a Consul service's check status is the agent's own run.
        statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(c.id.clone(), status.to_string());
        tokio::time::sleep(c.interval).await;
    }
}
