//! Keeps a [`Surface`] in step with what the cluster holds: `<prefix>/status` (what the leader
//! wrote) and `<prefix>/config` (for the policies and links the page shows), followed with
//! blocking queries. A follower needs nothing else to serve the page and `/api/status`; the
//! leader can run it too instead of publishing by hand.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Role, SpecSummary, Surface};
use crate::consul::ConsulApi;
use crate::leader::Leadership;
use crate::spec::{self, status::ProxyStatus};
use crate::transport::QueryOptions;

/// How long one blocking query may wait.
const WAIT: Duration = Duration::from_secs(300);
/// First and longest pause after a failed read.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Follows both keys until `shutdown` resolves. Read errors back off and keep what is shown.
/// The first answer on `<prefix>/status` marks the surface as following (`/readyz` of a
/// follower); it is cleared when this returns.
pub async fn follow<C: ConsulApi>(
    consul: C,
    prefix: String,
    proxy_host: String,
    surface: Surface,
    shutdown: impl Future<Output = ()> + Send,
) {
    follow_keys(&consul, &prefix, &proxy_host, &surface, shutdown).await;
}

/// Gives the surface the role of this replica in `leadership` (the elector's channel) until the
/// elector stops: while another replica leads (or none is known to), the surface shows
/// `follower` (`unknown` before the first election answer) and [`follow`]s what the leader
/// writes; on gaining the lock it stops following, and the loop publishes what it writes itself.
pub async fn serve_by_role<C: ConsulApi>(
    consul: Arc<C>,
    prefix: String,
    proxy_host: String,
    surface: Surface,
    mut leadership: watch::Receiver<Leadership>,
) {
    loop {
        let state = leadership.borrow_and_update().clone();
        match state {
            Leadership::Stopped => return,
            Leadership::Leader(_) => {
                surface.set_role(Role::Leader);
                if leadership.changed().await.is_err() {
                    return;
                }
            }
            Leadership::Follower { .. } | Leadership::Unknown { .. } => {
                let following = follow_keys(
                    &*consul,
                    &prefix,
                    &proxy_host,
                    &surface,
                    std::future::pending(),
                );
                tokio::pin!(following);
                loop {
                    surface.set_role(role_of(&leadership.borrow_and_update()));
                    tokio::select! {
                        () = &mut following => return,
                        changed = leadership.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let leads = {
                                let now = leadership.borrow();
                                now.is_leader() || *now == Leadership::Stopped
                            };
                            if leads {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The surface's role for a state that is not leading.
fn role_of(state: &Leadership) -> Role {
    match state {
        Leadership::Follower { .. } => Role::Follower,
        Leadership::Leader(_) => Role::Leader,
        Leadership::Unknown { .. } | Leadership::Stopped => Role::Unknown,
    }
}

async fn follow_keys<C: ConsulApi>(
    consul: &C,
    prefix: &str,
    proxy_host: &str,
    surface: &Surface,
    shutdown: impl Future<Output = ()> + Send,
) {
    /// Clears `following` however the follow ends (returned, or dropped by its caller).
    struct Following<'a>(&'a Surface);
    impl Drop for Following<'_> {
        fn drop(&mut self) {
            self.0.set_following(false);
        }
    }
    let _following = Following(surface);
    let status_key = format!("{prefix}/status");
    let config_key = format!("{prefix}/config");
    let status = watch_key(
        consul,
        &status_key,
        || surface.set_following(true),
        |bytes| {
            if let Ok(s) = serde_json::from_slice::<ProxyStatus>(bytes) {
                surface.publish_status(&s);
            }
        },
    );
    let config = watch_key(
        consul,
        &config_key,
        || {},
        |bytes| {
            if let Ok(spec) = spec::load(bytes) {
                surface.publish_spec(SpecSummary::of(&spec, proxy_host));
            }
        },
    );
    tokio::select! {
        () = shutdown => {}
        () = status => {}
        () = config => {}
    }
}

/// Calls `on_value` with each new value of `key`, forever; `established` once, at the first
/// answer (the key may be absent: the watch is established all the same).
async fn watch_key<C: ConsulApi>(
    consul: &C,
    key: &str,
    established: impl FnOnce(),
    on_value: impl Fn(&[u8]),
) {
    let mut established = Some(established);
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
                // After the first value is shown, so a ready follower shows it.
                if let Some(established) = established.take() {
                    established();
                }
            }
            Err(e) => {
                tracing::debug!(%key, error = %e, "status page: reading the key failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
