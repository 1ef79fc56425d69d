//! A proxy the operator only runs as a Nomad job: it reads no policy of ours live, and its gate
//! is the job's health plus the route probes through its entry points. Caddy runs this way until
//! its own driver (admin API, `POST /load`, catalog routes) takes over.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::probe::{ProxyProbe, probe_routes};
use super::traefik::KvPolicyTree;
use super::{ProxyDriver, Reach, base_gate};
use crate::consul::ConsulApi;
use crate::leader::Fence;
use crate::rollout::{ApplyError, Gate, ProxyObservation};
use crate::spec::{ProxyKind, ValidatedSpec};

/// The gate of a plain proxy: job health and route probes only.
#[must_use]
pub fn gate(kind: ProxyKind, spec: &ValidatedSpec, reach: &Reach) -> Gate {
    base_gate(kind, spec, reach)
}

/// The driver of a proxy run as a job only.
pub struct PlainDriver<C, P> {
    kind: ProxyKind,
    /// A switch from Traefik leaves its policy tree behind; the plan deletes it through here.
    leftover: KvPolicyTree<C>,
    probe: Arc<P>,
}

impl<C: ConsulApi, P> PlainDriver<C, P> {
    /// A driver for `kind` over the operator's clients.
    pub fn new(kind: ProxyKind, consul: Arc<C>, probe: Arc<P>, kv_root: &str) -> Self {
        Self {
            kind,
            leftover: KvPolicyTree::new(consul, kv_root),
            probe,
        }
    }
}

impl<C: ConsulApi + 'static, P: ProxyProbe> ProxyDriver for PlainDriver<C, P> {
    fn kind(&self) -> ProxyKind {
        self.kind
    }

    fn apply_policy<'a>(
        &'a self,
        set: &'a [(String, String)],
        delete: &'a [String],
        fence: Option<&'a Fence>,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(self.leftover.write(set, delete, fence))
    }

    fn observe<'a>(&'a self, gate: &'a Gate) -> BoxFuture<'a, ProxyObservation> {
        Box::pin(async move {
            ProxyObservation {
                probes: probe_routes(&*self.probe, &gate.probes).await,
                ..ProxyObservation::default()
            }
        })
    }
}
