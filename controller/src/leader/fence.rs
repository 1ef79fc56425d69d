//! The fence of every KV write of the leader (DESIGN §6).

use super::{Error, Result};
use crate::consul::{self, ConsulApi, TxnOp, TxnResults};

/// The one way a leader fences its KV writes: the `check-session` op on the leader key, first in
/// every transaction, and the classifier of the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    key: String,
    session: String,
}

impl Fence {
    /// The fence of `session` on the leader key `key`.
    pub fn new(key: impl Into<String>, session: impl Into<String>) -> Fence {
        Fence {
            key: key.into(),
            session: session.into(),
        }
    }

    /// The session this fence checks.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The `check-session` op to put first in a transaction.
    pub fn op(&self) -> TxnOp {
        TxnOp::CheckSession {
            key: self.key.clone(),
            session: self.session.clone(),
        }
    }

    /// `ops` with the fence in front (Consul applies all or nothing).
    pub fn fenced(&self, ops: Vec<TxnOp>) -> Vec<TxnOp> {
        let mut all = Vec::with_capacity(ops.len() + 1);
        all.push(self.op());
        all.extend(ops);
        all
    }

    /// Applies `ops` behind the fence. A refusal of the fence is [`Error::Deposed`]; results
    /// are those of `ops` (the fence yields none).
    pub async fn txn(&self, consul: &impl ConsulApi, ops: Vec<TxnOp>) -> Result<TxnResults> {
        consul
            .txn(self.fenced(ops))
            .await
            .map_err(|e| self.classify(e))
    }

    /// Classifies a failed transaction that started with [`Fence::op`]: a rollback naming op 0
    /// is the fence, so the lock is no longer ours (another session holds it, it is unlocked,
    /// or the key is gone). Consul reports every failing op, so a CAS that failed at the same
    /// time does not hide a lost lock.
    ///
    /// A rollback for a missing permission ([`consul::Error::is_forbidden`]) is
    /// [`Error::Forbidden`] first, wherever it is: a token that may not read the leader key
    /// fails the fence too, and that is no deposition.
    pub fn classify(&self, error: consul::Error) -> Error {
        let forbidden = error.is_forbidden();
        match error {
            consul::Error::TxnRolledBack { errors } if forbidden => Error::Forbidden { errors },
            consul::Error::TxnRolledBack { errors } if errors.iter().any(|e| e.op_index == 0) => {
                Error::Deposed {
                    key: self.key.clone(),
                    session: self.session.clone(),
                    errors,
                }
            }
            other => Error::Write(other),
        }
    }
}
