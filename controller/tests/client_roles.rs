//! Role traits: a helper asks only for the slice of the API it uses, a test double implements
//! only that slice, and every full client (or fake) still serves the helper.
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use proxy_operator::consul::fake::FakeConsul;
use proxy_operator::consul::roles::ConsulKv;
use proxy_operator::consul::{Error, KvPair, Result};
use proxy_operator::nomad::fake::FakeNomad;
use proxy_operator::nomad::roles::NomadStatus;
use proxy_operator::transport::{QueryMeta, QueryOptions};

/// Code that only reads KV, as the config watch does.
async fn config_value(kv: &impl ConsulKv, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(kv.kv_get(key, QueryOptions::NOW).await?.0.map(|p| p.value))
}

/// A double with one key and no other Consul behaviour at all.
struct OneKey {
    key: &'static str,
    value: &'static [u8],
}

fn not_here(op: &str) -> Error {
    Error::injected(op, 501, "not part of this double")
}

impl ConsulKv for OneKey {
    async fn kv_get(&self, key: &str, _: QueryOptions) -> Result<(Option<KvPair>, QueryMeta)> {
        let pair = (key == self.key).then(|| KvPair {
            key: key.to_owned(),
            value: self.value.to_vec(),
            ..KvPair::default()
        });
        Ok((pair, QueryMeta::default()))
    }

    async fn kv_list(&self, _: &str, _: QueryOptions) -> Result<(Vec<KvPair>, QueryMeta)> {
        Err(not_here("list"))
    }

    async fn kv_keys(
        &self,
        _: &str,
        _: Option<&str>,
        _: QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta)> {
        Err(not_here("keys"))
    }

    async fn kv_put(&self, _: &str, _: &[u8], _: Option<u64>) -> Result<bool> {
        Err(not_here("put"))
    }

    async fn kv_delete(&self, _: &str, _: Option<u64>) -> Result<bool> {
        Err(not_here("delete"))
    }
}

#[tokio::test]
async fn a_double_implementing_only_the_kv_role_serves_a_kv_helper() {
    let double = OneKey {
        key: "proxy-operator/config",
        value: b"spec",
    };
    assert_eq!(
        config_value(&double, "proxy-operator/config")
            .await
            .unwrap(),
        Some(b"spec".to_vec())
    );
    assert_eq!(config_value(&double, "other").await.unwrap(), None);
}

#[tokio::test]
async fn every_full_consul_and_nomad_implementation_serves_the_role_helpers() {
    let consul = FakeConsul::new();
    consul.set("proxy-operator/config", "from the fake");
    assert_eq!(
        config_value(&consul, "proxy-operator/config")
            .await
            .unwrap(),
        Some(b"from the fake".to_vec())
    );
    let nomad = FakeNomad::new();
    nomad.set_leader("10.0.0.1:4647");
    assert_eq!(
        NomadStatus::status_leader(&nomad).await.unwrap(),
        "10.0.0.1:4647"
    );
}
