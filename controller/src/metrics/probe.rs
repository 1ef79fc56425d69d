//! The proxy's API counted like Consul's and Nomad's: [`MeteredProbe`] wraps any
//! [`ProxyProbe`] and records each call as an [`Api::Proxy`] request (endpoint class, status
//! code, latency) through the same [`Metrics`] hook the HTTP clients use.

use std::time::Instant;

use super::{Api, Metrics, endpoint_class};
use crate::proxy::probe::{Error, ProxyProbe, Result, RouteProbe};
use crate::proxy::traefik::RawEntry;

/// A [`ProxyProbe`] whose calls are counted in [`Metrics`] (`api="proxy"`). Classes: `ping`,
/// `api` (`/api/rawdata`, by [`endpoint_class`]), and `route` for the probes sent through an
/// entry point. A `/ping` that answered something else than 200 is counted as `non_200`: the
/// probe reports only whether it was 200.
#[derive(Debug, Clone)]
pub struct MeteredProbe<P> {
    inner: P,
    metrics: Metrics,
}

impl<P> MeteredProbe<P> {
    /// Counts the calls of `inner` in `metrics`.
    pub fn new(inner: P, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    fn record<T>(
        &self,
        class: &str,
        started: Instant,
        result: &Result<T>,
        code: impl Fn(&T) -> String,
    ) {
        let code = match result {
            Ok(value) => code(value),
            // The proxy answered, with a status the call did not accept.
            Err(Error::Status { status, .. }) => status.to_string(),
            Err(_) => "error".to_owned(),
        };
        self.metrics
            .request_answered(Api::Proxy, class, code, started.elapsed());
    }
}

impl<P: ProxyProbe> ProxyProbe for MeteredProbe<P> {
    async fn ping(&self, api: &str) -> Result<bool> {
        let started = Instant::now();
        let result = self.inner.ping(api).await;
        self.record(endpoint_class("/ping"), started, &result, |ok| {
            if *ok { "200" } else { "non_200" }.to_owned()
        });
        result
    }

    async fn rawdata(&self, api: &str) -> Result<Vec<RawEntry>> {
        let started = Instant::now();
        let result = self.inner.rawdata(api).await;
        self.record(endpoint_class("/api/rawdata"), started, &result, |_| {
            "200".to_owned()
        });
        result
    }

    async fn route(&self, probe: &RouteProbe) -> Result<u16> {
        let started = Instant::now();
        let result = self.inner.route(probe).await;
        self.record("route", started, &result, u16::to_string);
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;
    use crate::proxy::probe::fake::FakeProbe;

    fn count(metrics: &Metrics, class: &str, code: &str) -> u64 {
        let line = format!(
            "proxy_operator_api_requests_total{{api=\"proxy\",class=\"{class}\",code=\"{code}\"}} "
        );
        let text = metrics.encode().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |v| v.parse().unwrap())
    }

    #[tokio::test]
    async fn proxy_probe_calls_are_counted_by_class_and_code_with_their_latency() {
        let fake = FakeProbe::healthy();
        let metrics = Metrics::new();
        let probe = MeteredProbe::new(fake.clone(), metrics.clone());
        assert!(probe.ping("http://127.0.0.1:1").await.unwrap());
        fake.set_ping(false);
        assert!(!probe.ping("http://127.0.0.1:1").await.unwrap());
        probe.rawdata("http://127.0.0.1:1").await.unwrap();
        fake.set_unreachable(true);
        assert!(probe.rawdata("http://127.0.0.1:1").await.is_err());
        assert_eq!(count(&metrics, "ping", "200"), 1);
        assert_eq!(count(&metrics, "ping", "non_200"), 1);
        assert_eq!(count(&metrics, "api", "200"), 1);
        assert_eq!(count(&metrics, "api", "error"), 1);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                "proxy_operator_api_request_duration_seconds_count{api=\"proxy\",class=\"ping\"} 2"
            ),
            "{text}"
        );
    }
}
