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
/// rollout) or could not be checked, it is looked at again after this long (or the resync
/// interval, when shorter) rather than at the next resync...
pub(crate) const CERT_RECHECK: Duration = Duration::from_secs(30);
/// ...for this long after it was first found so (an ACME order takes seconds to a minute or
/// two); then at each resync, so a lasting failure costs no more passes than a healthy proxy.
/// A requeued pass is not a resync: the status's pass counter is not written by these
/// rechecks.
pub(crate) const CERT_RECHECK_WINDOW: Duration = Duration::from_secs(180);

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
        let before = std::mem::take(&mut self.store.status.certificate_warnings);
        status::certificates_checked(
            &mut self.store.status,
            checked.len(),
            warnings,
            SystemTime::now(),
        );
        let after = &self.store.status.certificate_warnings;
        if *after != before {
            // Logged when the findings change, not at every resync.
            for w in after {
                warn!(host = %w.host, kind = w.kind.as_str(), message = %w.message, "served certificate");
            }
            if after.is_empty() && !checked.is_empty() {
                info!(
                    hosts = checked.len(),
                    "every checked host is served its certificate"
                );
            }
        }
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
        if first.elapsed() < CERT_RECHECK_WINDOW && CERT_RECHECK < self.config.resync {
            Action::requeue(CERT_RECHECK)
        } else {
            Action::await_change()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;
    use crate::consul::fake::FakeConsul;
    use crate::metrics::{Metrics, test_cert_pem};
    use crate::nomad::fake::FakeNomad;
    use crate::proxy::probe::fake::FakeProbe;
    use crate::proxy::served_cert::tests::{spec, tls_server};
    use crate::reconcile::Config;
    use crate::server::Surface;
    use crate::spec::status::CertificateWarningKind;

    const SENTINEL: &str = "SENTINEL-private-key-7f3a9c";

    /// The key material of a PEM key: its base64 lines.
    fn key_lines(key_pem: &str) -> Vec<&str> {
        key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .collect()
    }

    #[tokio::test]
    #[tracing_test::traced_test]
    async fn a_fallback_is_a_status_warning_a_metric_and_a_log_line_and_no_key_material_reaches_any_of_them()
     {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::metrics::unix_now();
        let (cert, key) = test_cert_pem(&["app.example.test"], now + 90 * 86_400);
        // A bundle (key and certificate in one file, as Caddy's folders hold them) and the
        // key file itself, both carrying the sentinel.
        let bundle = dir.path().join("app.pem");
        let key_file = dir.path().join("app.key");
        std::fs::write(&bundle, format!("{SENTINEL}\n{key}{cert}")).unwrap();
        std::fs::write(&key_file, format!("{SENTINEL}\n{key}")).unwrap();
        // The entry point serves another certificate for the name: the file did not load.
        let (other_cert, other_key) = test_cert_pem(&["app.example.test"], now + 90 * 86_400);
        let (port, server) = tls_server(Some((&other_cert, &other_key))).await;

        let surface = Surface::new(Metrics::new());
        let mut op = Operator::new(
            Config::new("po"),
            FakeConsul::new(),
            FakeNomad::new(),
            FakeProbe::healthy(),
        )
        .with_surface(surface.clone());
        let doc = spec(port, &[(&bundle, &key_file)], &[], false);
        let action = op.check_served_certificates(&doc).await;
        server.abort();

        assert_eq!(
            action.requeue_after,
            Some(CERT_RECHECK),
            "a fallback is looked at again soon"
        );
        let status = serde_json::to_string(&op.store.status).unwrap();
        let warnings = &op.store.status.certificate_warnings;
        assert_eq!(warnings.len(), 1, "{status}");
        assert_eq!(
            warnings[0].kind,
            CertificateWarningKind::CertificateFallback
        );
        assert!(
            warnings[0].message.contains(&bundle.display().to_string()),
            "{status}"
        );
        let metrics = surface.metrics().encode().unwrap();
        assert!(
            metrics.contains("proxy_operator_certificate_fallback{host=\"app.example.test\"} 1"),
            "{metrics}"
        );
        assert!(logs_contain("served certificate"), "the warning is logged");

        assert!(!status.contains(SENTINEL), "{status}");
        assert!(!metrics.contains(SENTINEL));
        assert!(!logs_contain(SENTINEL));
        for line in key_lines(&key) {
            assert!(!status.contains(line) && !metrics.contains(line));
            assert!(!logs_contain(line));
        }
    }

    #[tokio::test]
    async fn a_lasting_fallback_is_rechecked_soon_only_within_the_window_and_never_later_than_a_resync()
     {
        // Nothing listens: unreachable, which may resolve by itself.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let doc = spec(port, &[], &["app.example.test"], true);
        let op = |resync| {
            Operator::new(
                Config::new("po").resync(resync),
                FakeConsul::new(),
                FakeNomad::new(),
                FakeProbe::healthy(),
            )
        };
        let mut first = op(Duration::from_secs(300));
        assert_eq!(
            first.check_served_certificates(&doc).await,
            Action::requeue(CERT_RECHECK)
        );
        assert_eq!(
            first.store.status.certificate_warnings[0].kind,
            CertificateWarningKind::CertificateUnchecked
        );
        first.store.served_unsettled_since =
            Instant::now().checked_sub(CERT_RECHECK_WINDOW + Duration::from_secs(1));
        assert!(first.store.served_unsettled_since.is_some());
        assert_eq!(
            first.check_served_certificates(&doc).await,
            Action::await_change(),
            "past the window: the resync looks again"
        );
        let mut fast = op(Duration::from_secs(3));
        assert_eq!(
            fast.check_served_certificates(&doc).await,
            Action::await_change(),
            "a resync sooner than the recheck is the recheck"
        );
    }

    #[tokio::test]
    async fn an_expected_certificate_clears_the_warnings_and_asks_for_no_recheck() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::metrics::unix_now();
        let (cert, key) = test_cert_pem(&["app.example.test"], now + 90 * 86_400);
        let (c, k) = crate::proxy::served_cert::tests::write_pair(dir.path(), "app", &cert, &key);
        let (port, server) = tls_server(Some((&cert, &key))).await;
        let mut op = Operator::new(
            Config::new("po"),
            FakeConsul::new(),
            FakeNomad::new(),
            FakeProbe::healthy(),
        );
        op.store.status.certificate_warnings = vec![Default::default()];
        let action = op
            .check_served_certificates(&spec(port, &[(&c, &k)], &[], false))
            .await;
        server.abort();
        assert_eq!(action, Action::await_change());
        assert!(op.store.status.certificate_warnings.is_empty());
        assert_eq!(
            op.store
                .status
                .condition(status::CONDITION_CERTIFICATES)
                .map(|c| c.status),
            Some(crate::spec::status::ConditionStatus::True)
        );
    }
}
