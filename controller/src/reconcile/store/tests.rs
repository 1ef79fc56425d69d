//! The status store: encoding, salvage, the merge on a CAS conflict and the fence.

use super::*;

/// A value whose serialisation fails, as a status or journal never should.
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot encode"))
    }
}

#[test]
fn a_value_that_cannot_be_encoded_is_an_error_never_an_empty_document() {
    for pretty in [true, false] {
        let err = encode("po/status", &Unencodable, pretty).unwrap_err();
        assert!(matches!(err, Error::Encode { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("po/status"), "{err}");
    }
}

use crate::consul::fake::FakeConsul;
use crate::consul::{CatalogRegistration, SessionBehavior, SessionRequest};
use crate::spec::status::Phase as StatusPhase;

const STATUS: &str = "proxy-operator/status";
const LEADER: &str = "proxy-operator/leader";

fn stored(consul: &FakeConsul) -> ProxyStatus {
    serde_json::from_slice(&consul.value(STATUS).unwrap()).unwrap()
}

async fn store_on(consul: &FakeConsul, status: &ProxyStatus) -> StatusStore {
    consul.set(STATUS, serde_json::to_vec(status).unwrap());
    let mut store = StatusStore::new(&Config::new("proxy-operator"));
    store.read(consul).await.unwrap();
    store
}

/// A session holding the leader lock in the fake.
async fn lock(consul: &FakeConsul) -> String {
    consul
        .catalog_register(&CatalogRegistration {
            node: "n1".to_owned(),
            address: "127.0.0.1".to_owned(),
            ..CatalogRegistration::default()
        })
        .await
        .unwrap();
    let session = consul
        .session_create(&SessionRequest {
            name: "test".to_owned(),
            ttl: Some(std::time::Duration::from_secs(15)),
            lock_delay: None,
            behavior: SessionBehavior::Release,
            node: Some("n1".to_owned()),
            checks: Some(Vec::new()),
        })
        .await
        .unwrap();
    assert!(consul.kv_acquire(LEADER, b"{}", &session).await.unwrap());
    session
}

#[tokio::test]
async fn a_status_cas_conflict_merges_the_other_writers_content_instead_of_overwriting_it() {
    let consul = FakeConsul::new();
    let base = ProxyStatus {
        observed_index: 1,
        ..ProxyStatus::default()
    };
    let mut store = store_on(&consul, &base).await;
    // Another writer changes a field this pass does not touch, behind our back.
    let theirs = ProxyStatus {
        failed_retry_nonce: Some("their-nonce".to_owned()),
        passes: 40,
        ..base.clone()
    };
    consul.set(STATUS, serde_json::to_vec(&theirs).unwrap());
    store.status.phase = StatusPhase::Ready;
    store.status.observed_index = 2;
    store.status.passes = 3;
    store.flush(&consul, None, true).await;
    assert!(store.write_error.is_none(), "{:?}", store.write_error);
    let written = stored(&consul);
    assert_eq!(
        written.failed_retry_nonce.as_deref(),
        Some("their-nonce"),
        "their field is kept"
    );
    assert_eq!(written.phase, StatusPhase::Ready, "our change is applied");
    assert_eq!(written.observed_index, 2);
    assert_eq!(written.passes, 40, "the pass counter never goes backwards");
    assert_eq!(store.status, written, "the operator knows what it wrote");
}

#[test]
fn a_field_both_writers_changed_keeps_both_histories() {
    let entry = |digest: &str, at: &str| HistoryEntry {
        digest: digest.to_owned(),
        proxy: None,
        outcome: spec::status::Outcome::Succeeded,
        started_at: at.to_owned(),
        duration_ms: 1,
        reason: String::new(),
    };
    let base = ProxyStatus::default();
    let ours = ProxyStatus {
        history: vec![entry("b", "2026-01-01T00:00:02Z")],
        ..base.clone()
    };
    let theirs = ProxyStatus {
        history: vec![entry("a", "2026-01-01T00:00:01Z")],
        ..base.clone()
    };
    let (merged, contested) = merge(&base, &ours, &theirs);
    assert_eq!(contested, vec!["history"]);
    let digests: Vec<&str> = merged.history.iter().map(|h| h.digest.as_str()).collect();
    assert_eq!(digests, ["a", "b"]);
}

#[tokio::test]
async fn a_write_refused_by_the_fence_is_deposed_never_retried_and_writes_nothing() {
    let consul = FakeConsul::new();
    let _holder = lock(&consul).await;
    let mut store = store_on(&consul, &ProxyStatus::default()).await;
    store.fence = Some(Fence::new(LEADER, "not-our-session"));
    store.status.phase = StatusPhase::Ready;
    consul.clear_calls();
    store.flush(&consul, None, false).await;
    assert!(store.deposed);
    let e = store.write_error.as_ref().unwrap();
    assert!(e.is_deposed() && !e.is_retryable(), "{e}");
    assert!(e.to_string().contains("deposed"), "{e}");
    assert_eq!(consul.calls_of("txn").len(), 1, "not retried as a conflict");
    assert_eq!(
        stored(&consul).phase,
        StatusPhase::default(),
        "nothing written"
    );
    // And nothing more is sent once deposed.
    store.status.observed_index = 9;
    store.flush(&consul, None, false).await;
    assert_eq!(consul.calls_of("txn").len(), 1);
}

#[tokio::test]
async fn the_holders_fenced_write_goes_through_with_the_check_session_first() {
    let consul = FakeConsul::new();
    let session = lock(&consul).await;
    let mut store = store_on(&consul, &ProxyStatus::default()).await;
    store.fence = Some(Fence::new(LEADER, session.clone()));
    store.status.phase = StatusPhase::Ready;
    store.flush(&consul, None, false).await;
    assert!(store.write_error.is_none(), "{:?}", store.write_error);
    assert_eq!(stored(&consul).phase, StatusPhase::Ready);
    assert!(!store.deposed);
}

#[test]
fn salvage_keeps_every_field_that_still_reads_and_names_the_rest() {
    let (status, kept, lost) =
        salvage(br#"{"failedDigest": "abc", "history": "not a list", "lastAppliedDigest": "def"}"#);
    assert_eq!(status.failed_digest.as_deref(), Some("abc"));
    assert_eq!(status.last_applied_digest.as_deref(), Some("def"));
    assert_eq!(kept, vec!["failedDigest", "lastAppliedDigest"]);
    assert_eq!(lost, vec!["history"]);
    let (status, kept, lost) = salvage(b"<html>");
    assert_eq!(status, ProxyStatus::default());
    assert!(kept.is_empty());
    assert_eq!(lost.len(), 1);
}
