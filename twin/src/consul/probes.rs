//! Runs the agent's HTTP and TCP checks (SRC agent/checks/check.go `CheckHTTP.check`,
//! `CheckTCP.check`): an HTTP check is passing on a 2xx answer, warning on 429 and critical on
//! anything else, a timeout or a refused connection; a TCP check is passing when it connects
//! within its timeout. The timer task starts a run whenever [`Store::due_probes`] says so and
//! writes the outcome back, so a linked session dies with the check like in Consul.

use std::sync::LazyLock;

use tokio::time::Instant;

use super::ConsulState;
use super::store::Store;
use super::store::agent::{Probe, ProbeTarget};

/// One client for every run; never through a proxy from the environment, as Consul's checks
/// dial the target directly.
static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
});

/// Starts every run that is due now, each in its own task.
pub(super) fn start_due(state: &ConsulState) {
    let due = state.write(|s: &mut Store| s.due_probes(Instant::now()));
    for (id, probe) in due {
        let state = state.clone();
        tokio::spawn(async move {
            let (status, output) = run(&probe).await;
            state.write(|s| s.agent_probe_result(&id, status, &output, Instant::now()));
        });
    }
}

/// One run: the status and the output Consul would record.
async fn run(probe: &Probe) -> (&'static str, String) {
    match &probe.target {
        ProbeTarget::Http { url, method } => {
            let method =
                reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let request = HTTP
                .request(method.clone(), url)
                .timeout(probe.timeout)
                .header("User-Agent", "Consul Health Check")
                .header("Accept", "text/plain, text/*, */*")
                .send();
            match request.await {
                Ok(resp) => {
                    let code = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    // Consul keeps at most 4 KiB of the body (`BufSize`).
                    let body: String = body.chars().take(4096).collect();
                    let output = format!("HTTP {method} {url}: {code} Output: {body}");
                    let status = if code.is_success() {
                        "passing"
                    } else if code.as_u16() == 429 {
                        "warning"
                    } else {
                        "critical"
                    };
                    (status, output)
                }
                Err(e) => ("critical", format!("{method} {url:?}: {e}")),
            }
        }
        ProbeTarget::Tcp { address } => {
            let connect = tokio::net::TcpStream::connect(address.as_str());
            match tokio::time::timeout(probe.timeout, connect).await {
                Ok(Ok(_)) => ("passing", format!("TCP connect {address}: Success")),
                Ok(Err(e)) => ("critical", format!("dial tcp {address}: {e}")),
                Err(_) => ("critical", format!("dial tcp {address}: i/o timeout")),
            }
        }
    }
}
