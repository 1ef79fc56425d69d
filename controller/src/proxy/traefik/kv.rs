//! Traefik's policy as its Consul KV provider reads it: the tree under `<prefix>/traefik/`,
//! always written in one transaction (TRAEFIK.md B: Traefik applies a half-written tree, so one
//! txn is the only safe way).

use crate::proxy::PolicyWrite;
use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::info;

use crate::consul::{ConsulApi, TxnOp};
use crate::render::MAX_POLICY_KEYS;
use crate::rollout::ApplyError;
use crate::transport::QueryOptions;

/// Consul transactions take at most this many operations: a delete-tree plus every key of a
/// tree of [`MAX_POLICY_KEYS`].
pub const TXN_MAX_OPS: usize = MAX_POLICY_KEYS + 1;

/// Writes the policy tree under one root.
pub struct KvPolicyTree<C> {
    consul: Arc<C>,
    root: String,
}

impl<C: ConsulApi> KvPolicyTree<C> {
    /// The tree under `root` (with its trailing slash).
    pub fn new(consul: Arc<C>, root: &str) -> Self {
        Self {
            consul,
            root: root.to_owned(),
        }
    }

    /// Writes the entries in one transaction, behind `fence` when given (a refused fence is a
    /// deposed leader's write: not retryable, and it says so). A change with more operations
    /// than a transaction holds rewrites the whole subtree instead (delete-tree, then every
    /// entry), which fits as long as the tree does: `render` refuses a tree over
    /// [`MAX_POLICY_KEYS`].
    ///
    /// # Errors
    /// Consul refused or did not answer (retryable unless 4xx), or the tree does not fit.
    pub async fn write(&self, write: PolicyWrite<'_>) -> Result<(), ApplyError> {
        let PolicyWrite { set, delete, fence } = write;
        info!(
            set = set.len(),
            delete = delete.len(),
            "writing the policy tree"
        );
        let ops: Vec<TxnOp> = if set.len() + delete.len() <= TXN_MAX_OPS {
            set.iter()
                .map(|(key, value)| TxnOp::Set {
                    key: key.clone(),
                    value: value.clone().into_bytes(),
                })
                .chain(delete.iter().map(|key| TxnOp::Delete { key: key.clone() }))
                .collect()
        } else {
            self.rewrite_ops(set, delete).await?
        };
        match fence {
            Some(fence) => fence
                .txn(&*self.consul, ops)
                .await
                .map(|_| ())
                .map_err(|e| ApplyError::new(e.to_string(), e.is_retryable())),
            None => self
                .consul
                .txn(ops)
                .await
                .map(|_| ())
                .map_err(|e| ApplyError::new(e.to_string(), e.is_retryable())),
        }
    }

    /// The whole subtree after applying `set` and `delete`, as one delete-tree + sets.
    async fn rewrite_ops(
        &self,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<Vec<TxnOp>, ApplyError> {
        let root = &self.root;
        let (pairs, _) = self
            .consul
            .kv_list(root, QueryOptions::NOW)
            .await
            .map_err(|e| ApplyError::new(e.to_string(), e.is_retryable()))?;
        let mut tree: BTreeMap<String, Vec<u8>> = pairs
            .into_iter()
            .filter(|p| p.key.starts_with(root.as_str()))
            .map(|p| (p.key, p.value))
            .collect();
        for key in delete {
            tree.remove(key);
        }
        for (key, value) in set {
            tree.insert(key.clone(), value.clone().into_bytes());
        }
        if tree.len() >= TXN_MAX_OPS {
            return Err(ApplyError::new(
                format!(
                    "failed to write the policy tree: {} keys do not fit one Consul transaction ({TXN_MAX_OPS} operations)",
                    tree.len()
                ),
                false,
            ));
        }
        info!(
            keys = tree.len(),
            "the change exceeds one transaction; rewriting the whole policy tree"
        );
        Ok(std::iter::once(TxnOp::DeleteTree { key: root.clone() })
            .chain(
                tree.into_iter()
                    .map(|(key, value)| TxnOp::Set { key, value }),
            )
            .collect())
    }
}
