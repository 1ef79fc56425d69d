//! `/v1/agent/*` and `/v1/status/*` (DOC api-docs/agent/index.mdx, agent/service.mdx,
//! agent/check.mdx, status.mdx; SRC agent/agent_endpoint.go, agent/status_endpoint.go).
//!
//! One story told consistently: the twin is a single server, node [`NODE_NAME`] at
//! 127.0.0.1, its own raft leader at [`LEADER`]; `agent/self`, `agent/members`,
//! `status/leader` and `status/peers` all say so.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::catalog::check_json;
use super::store::agent::{AgentCheckDef, AgentError, AgentServiceDef};
use super::store::{DATACENTER, NODE_ID, NODE_NAME, ServiceInstance};
use super::{ConsulState, json, json_body_or_default, text};

/// The twin's raft leader address (what `/v1/status/leader` reports).
pub const LEADER: &str = "127.0.0.1:8300";
/// The Consul version the twin reports.
pub const VERSION: &str = "1.22.0";

/// The agent routes (behind the ACL layer).
pub(super) fn routes() -> Router<ConsulState> {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/service/register", put(service_register))
        .route("/v1/agent/service/deregister/{id}", put(service_deregister))
        .route("/v1/agent/check/register", put(check_register))
        .route("/v1/agent/check/deregister/{id}", put(check_deregister))
        .route("/v1/agent/check/pass/{id}", put(check_pass))
        .route("/v1/agent/check/warn/{id}", put(check_warn))
        .route("/v1/agent/check/fail/{id}", put(check_fail))
        .route("/v1/agent/check/update/{id}", put(check_update))
}

fn done(result: Result<(), AgentError>) -> Response {
    match result {
        // The agent endpoints return `nil, nil`: an empty 200.
        Ok(()) => StatusCode::OK.into_response(),
        Err(AgentError::BadRequest(m)) => text(StatusCode::BAD_REQUEST, &m),
        Err(AgentError::NotFound(m)) => text(StatusCode::NOT_FOUND, &m),
        Err(AgentError::Internal(m)) => text(StatusCode::INTERNAL_SERVER_ERROR, &m),
    }
}

async fn decode<T: serde::de::DeserializeOwned + Default>(body: Body) -> Result<T, Response> {
    json_body_or_default(body, 1024 * 1024).await
}

fn member() -> Value {
    json!({
        "Name": NODE_NAME,
        "Addr": "127.0.0.1",
        "Port": 8301,
        "Tags": {
            "acls": "0", "bootstrap": "1", "build": format!("{VERSION}:hashistack-twin"),
            "dc": DATACENTER, "ft_fs": "1", "ft_si": "1", "id": NODE_ID,
            "port": "8300", "raft_vsn": "3", "role": "consul", "segment": "",
            "vsn": "2", "vsn_max": "3", "vsn_min": "2", "wan_join_port": "8302"
        },
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4
    })
}

/// `GET /v1/agent/self`: `Config`, `DebugConfig`, `Coord`, `Member`, `Stats`, `Meta`, `xDS`
/// (the `Self` struct of SRC agent/agent_endpoint.go).
async fn agent_self(State(st): State<ConsulState>) -> Response {
    let (services, checks, ttls, index) = st.read(|s| {
        (
            s.agent_services().len(),
            s.agent_checks().len(),
            s.agent_ttl_checks(),
            s.index,
        )
    });
    let acl = if st.inner.acl_token.is_some() {
        "enabled"
    } else {
        "disabled"
    };
    let body = json!({
        "Config": {
            "Datacenter": DATACENTER,
            "PrimaryDatacenter": DATACENTER,
            "NodeName": NODE_NAME,
            "NodeID": NODE_ID,
            "Revision": "hashistack-twin",
            "Server": true,
            "Version": VERSION,
            "BuildDate": "2025-01-01T00:00:00Z"
        },
        "DebugConfig": {
            "Datacenter": DATACENTER,
            "NodeName": NODE_NAME,
            "ServerMode": true,
            "ACLsEnabled": st.inner.acl_token.is_some(),
            "SessionTTLMin": crate::blocking::format_go_duration(st.read(|s| s.session_ttl_min())),
        },
        "Coord": { "Adjustment": 0, "Error": 1.5, "Height": 1.0e-5, "Vec": [0, 0, 0, 0, 0, 0, 0, 0] },
        "Member": member(),
        "Stats": {
            "agent": {
                "check_monitors": "0",
                "check_ttls": ttls.to_string(),
                "checks": checks.to_string(),
                "services": services.to_string()
            },
            "build": {
                "prerelease": "",
                "revision": "hashistack-twin",
                "version": VERSION,
                "version_metadata": ""
            },
            "consul": {
                "acl": acl,
                "bootstrap": "true",
                "known_datacenters": "1",
                "leader": "true",
                "leader_addr": LEADER,
                "server": "true"
            },
            "raft": {
                "applied_index": index.to_string(),
                "commit_index": index.to_string(),
                "last_log_index": index.to_string(),
                "num_peers": "0",
                "state": "Leader",
                "latest_configuration": format!("[{{Suffrage:Voter ID:{NODE_ID} Address:{LEADER}}}]")
            },
            "runtime": {
                "arch": std::env::consts::ARCH,
                "os": std::env::consts::OS,
                "version": "go1.23.0"
            }
        },
        "Meta": { "consul-network-segment": "", "consul-version": VERSION },
        "xDS": {
            "SupportedProxies": { "envoy": ["1.33.0", "1.32.3", "1.31.5", "1.30.9"] },
            "Port": 8502,
            "Ports": { "Plaintext": 8502, "TLS": -1 }
        }
    });
    json(StatusCode::OK, HeaderMap::new(), &body)
}

async fn members() -> Response {
    json(StatusCode::OK, HeaderMap::new(), &json!([member()]))
}

/// `/v1/status/leader`: the same address `agent/self` reports as `Stats.consul.leader_addr`.
pub(super) async fn status_leader() -> Response {
    json(StatusCode::OK, HeaderMap::new(), &json!(LEADER))
}

/// `/v1/status/peers`: the raft peers, the leader alone.
pub(super) async fn status_peers() -> Response {
    json(StatusCode::OK, HeaderMap::new(), &json!([LEADER]))
}

/// `buildAgentService` (SRC agent/agent_endpoint.go), in the docs' sample shape.
fn agent_service_json(s: &ServiceInstance) -> Value {
    let mut v = json!({
        "ID": s.id,
        "Service": s.service,
        "Tags": s.tags,
        "Meta": s.meta,
        "Port": s.port,
        "Address": s.address,
        "EnableTagOverride": s.enable_tag_override,
        "Datacenter": DATACENTER,
        "Weights": { "Passing": s.weights.0, "Warning": s.weights.1 },
    });
    if s.tagged_addresses
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        v["TaggedAddresses"] = s.tagged_addresses.clone();
    }
    if !s.kind.is_empty() {
        v["Kind"] = json!(s.kind);
    }
    v
}

async fn services(State(st): State<ConsulState>) -> Response {
    let map: Map<String, Value> = st.read(|s| {
        s.agent_services()
            .into_iter()
            .map(|svc| (svc.id.clone(), agent_service_json(svc)))
            .collect()
    });
    json(StatusCode::OK, HeaderMap::new(), &Value::Object(map))
}

async fn checks(State(st): State<ConsulState>) -> Response {
    let map: Map<String, Value> = st.read(|s| {
        s.agent_checks()
            .into_iter()
            .map(|c| (c.check_id.clone(), check_json(c)))
            .collect()
    });
    json(StatusCode::OK, HeaderMap::new(), &Value::Object(map))
}

async fn service_register(State(st): State<ConsulState>, body: Body) -> Response {
    let def: AgentServiceDef = match decode(body).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    done(st.write(|s| s.agent_service_register(def, Instant::now())))
}

async fn service_deregister(State(st): State<ConsulState>, Path(id): Path<String>) -> Response {
    done(st.write(|s| s.agent_service_deregister(&id, Instant::now())))
}

async fn check_register(State(st): State<ConsulState>, body: Body) -> Response {
    let def: AgentCheckDef = match decode(body).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    done(st.write(|s| s.agent_check_register(def, Instant::now())))
}

async fn check_deregister(State(st): State<ConsulState>, Path(id): Path<String>) -> Response {
    done(st.write(|s| s.agent_check_deregister(&id, Instant::now())))
}

#[derive(Deserialize)]
struct Note {
    #[serde(default)]
    note: String,
}

fn set_status(st: &ConsulState, id: &str, status: &str, output: &str) -> Response {
    done(st.write(|s| s.agent_check_update(id, status, output, Instant::now())))
}

async fn check_pass(st: State<ConsulState>, Path(id): Path<String>, q: Query<Note>) -> Response {
    set_status(&st, &id, "passing", &q.note)
}

async fn check_warn(st: State<ConsulState>, Path(id): Path<String>, q: Query<Note>) -> Response {
    set_status(&st, &id, "warning", &q.note)
}

async fn check_fail(st: State<ConsulState>, Path(id): Path<String>, q: Query<Note>) -> Response {
    set_status(&st, &id, "critical", &q.note)
}

/// The body of `PUT /v1/agent/check/update/:id` (`checkUpdate`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckUpdate {
    #[serde(default)]
    status: String,
    #[serde(default)]
    output: String,
}

async fn check_update(st: State<ConsulState>, Path(id): Path<String>, body: Body) -> Response {
    let u: CheckUpdate = match decode(body).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    if !matches!(u.status.as_str(), "passing" | "warning" | "critical") {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("Invalid check status: '{}'", u.status),
        );
    }
    set_status(&st, &id, &u.status, &u.output)
}
