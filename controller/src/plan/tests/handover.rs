//! The planner picks the handover slot: the other one, with the right `EnforceIndex`, and a
//! gate that reads the new slot's own API port.

use super::*;
use crate::render::RenderContext;
use crate::render::nomad_job::META_SLOT;

fn traefik_spec(cpu: u32) -> ValidatedSpec {
    spec(&format!(
        "  dashboard: {{address: \"127.0.0.1:9090\"}}\n  job:\n    resources: {{cpu: {cpu}}}\n"
    ))
}

fn caddy_spec() -> ValidatedSpec {
    let doc = "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: caddy\n  dashboard: {address: \"127.0.0.1:9090\"}\n  job:\n    resources: {cpu: 300}\n";
    crate::spec::load(doc.as_bytes()).unwrap()
}

fn serving(proxy: &str, slot: &str, stopped: bool) -> ObservedJob {
    ObservedJob {
        version: 4,
        modify_index: 300,
        meta: BTreeMap::from([
            (META_OWNER.to_owned(), OWNER.to_owned()),
            (META_SPEC_DIGEST.to_owned(), "old-digest".to_owned()),
            (META_PROXY.to_owned(), proxy.to_owned()),
            (META_SLOT.to_owned(), slot.to_owned()),
        ]),
        stopped,
        job_type: Some("system".to_owned()),
    }
}

fn planned(spec: &ValidatedSpec, job: Option<ObservedJob>, slots: &Slots) -> Change {
    let r = crate::render::render(spec, &RenderContext::default()).unwrap();
    planned_with(spec, job, r.traefik_kv, slots, &ProxyStatus::default())
}

/// The change planned for `spec` against `job` and the policy tree `kv`.
fn planned_with(
    spec: &ValidatedSpec,
    job: Option<ObservedJob>,
    kv: Vec<(String, String)>,
    slots: &Slots,
    status: &ProxyStatus,
) -> Change {
    let r = crate::render::render(spec, &RenderContext::default()).unwrap();
    let reach = Reach::on("127.0.0.1");
    let desired = Desired {
        spec,
        rendered: &r,
        owner: OWNER,
        kv_root: "proxy-operator/traefik/",
        reach: &reach,
    };
    change(plan_slots(&desired, &Observed { job, kv }, slots, status))
}

fn base_id() -> String {
    traefik_spec(1).job().id.clone()
}

#[test]
fn a_structural_change_of_a_traefik_serving_from_slot_a_registers_a_fresh_slot_b_beside_it() {
    let id = base_id();
    let c = planned(
        &traefik_spec(250),
        Some(serving("traefik", "a", false)),
        &Slots::default(),
    );
    let job = c.job.unwrap();
    assert_eq!(job.job_id, format!("{id}-b"));
    assert_eq!(c.job_id, job.job_id, "the gate watches the new slot");
    assert_eq!(job.enforce_index, 0, "slot b does not exist yet");
    assert_eq!(job.job["ID"], format!("{id}-b"));
    assert_eq!(job.job["Meta"][META_SLOT], "b");
    assert_eq!(
        job.rollback_to, None,
        "a failed handover stops; it reverts nothing"
    );
    let h = job.handover.unwrap();
    assert_eq!((h.from_job.as_str(), h.from_version), (id.as_str(), 4));
    assert_eq!(
        c.gate.proxy_api.as_deref(),
        Some("http://127.0.0.1:9091"),
        "the gate reads slot b's own API"
    );
}

#[test]
fn handing_back_to_a_stopped_slot_registers_it_with_its_modify_index_and_the_documents_api_port() {
    let id = base_id();
    let slots = Slots {
        serving: Slot::B,
        other: Some(ObservedJob {
            modify_index: 777,
            ..serving("traefik", "a", true)
        }),
    };
    let c = planned(
        &traefik_spec(250),
        Some(serving("traefik", "b", false)),
        &slots,
    );
    let job = c.job.unwrap();
    assert_eq!(job.job_id, id);
    assert_eq!(job.enforce_index, 777);
    assert_eq!(job.handover.unwrap().from_job, format!("{id}-b"));
    assert_eq!(c.gate.proxy_api.as_deref(), Some("http://127.0.0.1:9090"));
}

#[test]
fn while_the_newer_slot_still_runs_the_change_is_handed_over_to_it_and_the_older_stops_after() {
    let id = base_id();
    let mut newer = serving("traefik", "b", false);
    newer.modify_index = 900;
    let (job, slots) = Slots::pick(Some(serving("traefik", "a", false)), Some(newer), OWNER);
    let c = planned(&traefik_spec(250), job, &slots);
    let job = c.job.unwrap();
    assert_eq!(
        job.job_id,
        format!("{id}-b"),
        "the unverified slot is gated again"
    );
    assert_eq!(job.enforce_index, 900);
    let handover = job.handover.unwrap();
    assert_eq!(
        handover.from_job, id,
        "the older slot stops only after the gate"
    );
}

#[test]
fn both_slots_running_the_document_is_never_taken_as_converged() {
    let id = base_id();
    let spec = traefik_spec(250);
    let r = crate::render::render(&spec, &RenderContext::default()).unwrap();
    let running = |slot, modify_index| {
        let mut j = serving("traefik", slot, false);
        j.modify_index = modify_index;
        j.meta
            .insert(META_SPEC_DIGEST.to_owned(), r.job_digest.clone());
        j
    };
    let (job, slots) = Slots::pick(Some(running("a", 900)), Some(running("b", 300)), OWNER);
    assert_eq!(slots.serving, Slot::B, "slot b is the older here");
    let status = ProxyStatus {
        last_applied_digest: Some(spec.digest().to_owned()),
        ..ProxyStatus::default()
    };
    let c = planned_with(&spec, job, r.traefik_kv.clone(), &slots, &status);
    let job = c.job.unwrap();
    assert_eq!(job.job_id, id, "handed over to slot a, the newer");
    assert_eq!(job.handover.unwrap().from_job, format!("{id}-b"));
}

#[test]
fn a_policy_change_while_slot_b_serves_is_gated_on_slot_b_and_its_api_port() {
    let id = base_id();
    let spec = traefik_spec(250);
    let r = crate::render::render(&spec, &RenderContext::default()).unwrap();
    let mut live = serving("traefik", "b", false);
    live.meta
        .insert(META_SPEC_DIGEST.to_owned(), r.job_digest.clone());
    let slots = Slots {
        serving: Slot::B,
        other: None,
    };
    let c = planned_with(
        &spec,
        Some(live),
        Vec::new(),
        &slots,
        &ProxyStatus::default(),
    );
    assert!(c.job.is_none(), "only the policy differs");
    assert_eq!(c.job_id, format!("{id}-b"));
    assert_eq!(c.gate.proxy_api.as_deref(), Some("http://127.0.0.1:9091"));
}

#[test]
fn a_switch_from_caddy_to_traefik_is_in_place_since_caddy_cannot_share_its_ports() {
    let id = base_id();
    let c = planned(
        &traefik_spec(250),
        Some(serving("caddy", "a", false)),
        &Slots::default(),
    );
    let job = c.job.unwrap();
    assert!(job.handover.is_none());
    assert_eq!(job.job_id, id);
}

#[test]
fn a_caddy_change_is_never_a_handover_and_stays_in_its_slot() {
    let id = base_id();
    let slots = Slots {
        serving: Slot::B,
        other: None,
    };
    let c = planned(&caddy_spec(), Some(serving("traefik", "b", false)), &slots);
    let job = c.job.unwrap();
    assert!(job.handover.is_none());
    assert_eq!(
        job.job_id,
        format!("{id}-b"),
        "Traefik in slot b is replaced in place"
    );
    assert_eq!(job.enforce_index, 300);
    assert_eq!(
        c.gate.proxy_api.as_deref(),
        Some("http://127.0.0.1:9090"),
        "Caddy's admin port is never shifted"
    );
}

#[test]
fn the_serving_slot_is_the_one_not_stopped_and_else_the_newer() {
    let job = |stopped, modify_index| {
        Some(ObservedJob {
            modify_index,
            ..serving("traefik", "a", stopped)
        })
    };
    let pick = |a, b| Slots::pick(a, b, OWNER).1.serving;
    assert_eq!(pick(job(true, 900), job(false, 100)), Slot::B);
    assert_eq!(pick(job(false, 100), job(true, 900)), Slot::A);
    assert_eq!(pick(job(true, 100), job(true, 900)), Slot::B);
    assert_eq!(pick(None, None), Slot::A);
    assert_eq!(pick(None, job(false, 1)), Slot::B);
    // Both running (a handover cut short): the older served before it, the newer is unverified.
    assert_eq!(pick(job(false, 100), job(false, 900)), Slot::A);
    assert_eq!(pick(job(false, 900), job(false, 100)), Slot::B);
}

#[test]
fn a_foreign_job_in_slot_b_is_never_taken_for_the_serving_slot_and_blocks_the_handover() {
    let mut foreign = serving("traefik", "b", false);
    foreign
        .meta
        .insert(META_OWNER.to_owned(), "someone-else".to_owned());
    let (job, slots) = Slots::pick(None, Some(foreign.clone()), OWNER);
    assert!(job.is_none());
    assert_eq!(slots.serving, Slot::A);
    let (job, slots) = Slots::pick(Some(serving("traefik", "a", false)), Some(foreign), OWNER);
    let c = planned(&traefik_spec(250), job, &slots);
    let job = c.job.unwrap();
    assert!(
        job.handover.is_none(),
        "slot b is not ours to register over"
    );
    assert_eq!(job.job_id, base_id());
}
