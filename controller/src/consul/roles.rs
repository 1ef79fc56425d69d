//! Role traits: the slices of [`ConsulApi`] that callers actually use, in the manner of
//! kube-rs's narrow API traits. A function that only reads KV asks for `impl ConsulKv`, and its
//! test double implements five methods instead of eighteen.
//!
//! Every [`ConsulApi`] implementation is every role (blanket impls below), so code written
//! against `ConsulApi` keeps compiling and can hand its client to narrower helpers. A double
//! implements a role directly and must not also implement `ConsulApi`.
//!
//! They live in this module, not re-exported at `consul::*`, because calling a method on a
//! concrete type with both `ConsulApi` and a role in scope is ambiguous: import one or the other.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    CatalogRegistration, CatalogService, ConsulApi, KvPair, Result, ServiceEntry, SessionEntry,
    SessionRequest, TxnOp, TxnResults,
};
use crate::transport::{QueryMeta, QueryOptions};

/// Declares a role trait whose methods mirror methods of a full API trait with the same
/// signatures, and implements it for every implementation of the full trait by forwarding.
/// The method docs live on the full trait; the role links to them.
macro_rules! role_trait {
    (
        $(#[$meta:meta])*
        pub trait $role:ident: $api:ident {
            $( fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $out:ty; )+
        }
    ) => {
        $(#[$meta])*
        pub trait $role: Send + Sync {
            $(
                #[doc = concat!("See [`", stringify!($api), "::", stringify!($name), "`].")]
                fn $name(&self $(, $arg: $ty)*)
                    -> impl ::std::future::Future<Output = $out> + Send;
            )+
        }

        impl<T: $api> $role for T {
            $(
                fn $name(&self $(, $arg: $ty)*)
                    -> impl ::std::future::Future<Output = $out> + Send {
                    <T as $api>::$name(self $(, $arg)*)
                }
            )+
        }
    };
}
pub(crate) use role_trait;

role_trait! {
    /// KV reads and plain or CAS writes: the config watch, the status document, the journal.
    pub trait ConsulKv: ConsulApi {
        fn kv_get(&self, key: &str, opts: QueryOptions) -> Result<(Option<KvPair>, QueryMeta)>;
        fn kv_list(&self, prefix: &str, opts: QueryOptions) -> Result<(Vec<KvPair>, QueryMeta)>;
        fn kv_keys(
            &self,
            prefix: &str,
            separator: Option<&str>,
            opts: QueryOptions,
        ) -> Result<(Vec<String>, QueryMeta)>;
        fn kv_put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool>;
        fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<bool>;
    }
}

role_trait! {
    /// Atomic multi-key writes, fenced by `check-session` (DESIGN §6).
    pub trait ConsulTxn: ConsulApi {
        fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnResults>;
    }
}

role_trait! {
    /// Sessions and the locks they hold: leader election.
    pub trait ConsulSessions: ConsulApi {
        fn kv_acquire(&self, key: &str, value: &[u8], session: &str) -> Result<bool>;
        fn kv_release(&self, key: &str, value: &[u8], session: &str) -> Result<bool>;
        fn session_create(&self, request: &SessionRequest) -> Result<String>;
        fn session_create_bound(
            &self,
            request: &SessionRequest,
            service_checks: &[String],
        ) -> Result<String>;
        fn session_renew(&self, id: &str) -> Result<Option<Duration>>;
        fn session_destroy(&self, id: &str) -> Result<()>;
        fn session_info(
            &self,
            id: &str,
            opts: QueryOptions,
        ) -> Result<(Option<SessionEntry>, QueryMeta)>;
    }
}

role_trait! {
    /// The service catalog and health: route discovery, `dev` registrations.
    pub trait ConsulCatalog: ConsulApi {
        fn catalog_services(
            &self,
            opts: QueryOptions,
        ) -> Result<(BTreeMap<String, Vec<String>>, QueryMeta)>;
        fn catalog_service(
            &self,
            name: &str,
            opts: QueryOptions,
        ) -> Result<(Vec<CatalogService>, QueryMeta)>;
        fn catalog_register(&self, registration: &CatalogRegistration) -> Result<()>;
        fn catalog_deregister(&self, node: &str, service_id: Option<&str>) -> Result<()>;
        fn health_service(
            &self,
            name: &str,
            passing_only: bool,
            opts: QueryOptions,
        ) -> Result<(Vec<ServiceEntry>, QueryMeta)>;
    }
}

role_trait! {
    /// Cluster status: is there a Raft leader.
    pub trait ConsulStatus: ConsulApi {
        fn status_leader(&self) -> Result<String>;
    }
}
