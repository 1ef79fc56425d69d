//! Keeps a [`Surface`] in step with what the cluster holds: `<prefix>/status` (what the leader
//! wrote) and `<prefix>/config` (for the policies and links the page shows), followed with
//! blocking queries. A follower needs nothing else to serve the page and `/api/status`; the
//! leader can run it too instead of publishing by hand.

use std::future::Future;
use std::time::Duration;

use super::{SpecSummary, Surface};
use crate::consul::ConsulApi;
use crate::spec::{self, status::ProxyStatus};
use crate::transport::QueryOptions;

/// How long one blocking query may wait.
const WAIT: Duration = Duration::from_secs(300);
/// First and longest pause after a failed read.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Follows both keys until `shutdown` resolves. Read errors back off and keep what is shown.
pub async fn follow<C: ConsulApi>(
    consul: C,
    prefix: String,
    proxy_host: String,
    surface: Surface,
    shutdown: impl Future<Output = ()> + Send,
) {
    let status_key = format!("{prefix}/status");
    let config_key = format!("{prefix}/config");
    let status = watch_key(&consul, &status_key, |bytes| {
        if let Ok(s) = serde_json::from_slice::<ProxyStatus>(bytes) {
            surface.publish_status(&s);
        }
    });
    let config = watch_key(&consul, &config_key, |bytes| {
        if let Ok(spec) = spec::load(bytes) {
            surface.publish_spec(SpecSummary::of(&spec, &proxy_host));
        }
    });
    tokio::select! {
        () = shutdown => {}
        () = status => {}
        () = config => {}
    }
}

/// Calls `on_value` with each new value of `key`, forever.
async fn watch_key<C: ConsulApi>(consul: &C, key: &str, on_value: impl Fn(&[u8])) {
    let mut index = 0;
    let mut backoff = MIN_BACKOFF;
    loop {
        let opts = if index == 0 {
            QueryOptions::NOW
        } else {
            QueryOptions::blocking(index, WAIT)
        };
        match consul.kv_get(key, opts).await {
            Ok((pair, meta)) => {
                backoff = MIN_BACKOFF;
                // Consul's index rules: an index that went backwards resets the watch.
                let next = if meta.index < index {
                    0
                } else {
                    meta.index.max(1)
                };
                if (next != index || index == 0)
                    && let Some(pair) = pair
                {
                    on_value(&pair.value);
                }
                index = next;
            }
            Err(e) => {
                tracing::debug!(%key, error = %e, "status page: reading the key failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
