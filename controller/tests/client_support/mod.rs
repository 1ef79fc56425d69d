//! Setup shared by the client tests: a twin, and client settings for it with fast retries.

use std::net::SocketAddr;
use std::time::Duration;

use hashistack_twin::{Twin, TwinConfig};
use proxy_operator::transport::{Api, ClientConfig, RetryPolicy, Token};

/// A twin; with `token`, every request must carry it.
pub async fn twin(token: Option<&str>) -> Twin {
    Twin::start(TwinConfig {
        acl_token: token.map(str::to_owned),
        ..TwinConfig::default()
    })
    .await
    .unwrap()
}

/// Settings for `api` at `addr` with `token` and a short retry budget (2 retries, ≤ 20 ms).
pub fn config(api: Api, addr: SocketAddr, token: Option<&str>) -> ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = ClientConfig::for_address(api, &format!("http://{addr}")).unwrap();
    config.token = token.map(Token::new);
    config.retry = RetryPolicy {
        max_retries: 2,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    config
}
