//! The look at the certificates the proxy serves, from the loop: after a rollout passes the
//! gate and at every resync (the passes at rest that find nothing to do), the operator asks
//! the proxy's TLS entry point for each host the document names
//! ([`served_cert`](crate::proxy::served_cert)) and records what is wrong as status warnings
//! and metrics. It never fails or starts a rollout, and takes at most
//! [`CHECK_TIMEOUT`](crate::proxy::served_cert::CHECK_TIMEOUT).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{info, warn};

use crate::consul::ConsulApi;
use crate::nomad::NomadApi;
use crate::proxy::probe::ProxyProbe;
use crate::proxy::served_cert::{self, Verdict};
use crate::reconcile::{Action, Operator};
use crate::spec::ValidatedSpec;
use crate::status;

/// While a host is served a fallback (an ACME order may still be in progress right after a
/// rollout) or could not be checked, it is looked at again after this long rather than at the
/// next resync...
pub(crate) const CERT_RECHECK: Duration = Duration::from_secs(30);
/// ...for this long after it was first found so; then at each resync, so a lasting failure
/// costs no more passes than a healthy proxy.
pub(crate) const CERT_RECHECK_WINDOW: Duration = Duration::from_secs(300);

impl<C, N, P> Operator<C, N, P>
where
    C: ConsulApi + 'static,
    N: NomadApi,
    P: ProxyProbe,
{
    /// Looks at the certificates the proxy serves for `spec` and records the result in the
    /// status the next report writes and in the metrics. Returns what the pass should ask of
    /// the loop: a sooner look while something may still resolve on its own.
    pub(in crate::reconcile) async fn check_served_certificates(
        &mut self,
        spec: &ValidatedSpec,
    ) -> Action {
        let now = crate::metrics::unix_now();
        let checked = served_cert::check(spec, &self.config.proxy_host, now).await;
        let warnings: Vec<_> = checked.iter().filter_map(|c| c.warning(now)).collect();
        if let Some(surface) = &self.observer.surface {
            surface
                .metrics()
                .served_certificates(checked.iter().filter_map(|c| c.gauge()).collect());
        }
        if warnings != self.store.status.certificate_warnings {
            // Logged when the findings change, not at every resync.
            for w in &warnings {
                warn!(host = %w.host, kind = w.kind.as_str(), message = %w.message, "served certificate");
            }
            if warnings.is_empty() && !checked.is_empty() {
                info!(
                    hosts = checked.len(),
                    "every checked host is served its certificate"
                );
            }
        }
        status::certificates_checked(
            &mut self.store.status,
            checked.len(),
            warnings,
            SystemTime::now(),
        );
        let unsettled = checked.iter().any(|c| {
            matches!(
                c.verdict,
                Verdict::Fallback { .. } | Verdict::Unreachable(_)
            )
        });
        let since = &mut self.store.served_unsettled_since;
        if !unsettled {
            *since = None;
            return Action::await_change();
        }
        let first = *since.get_or_insert_with(Instant::now);
        if first.elapsed() < CERT_RECHECK_WINDOW {
            Action::requeue(CERT_RECHECK)
        } else {
            Action::await_change()
        }
    }
}
