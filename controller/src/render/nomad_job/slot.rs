//! The two job slots of a Traefik handover (ARCHITECTURE.md, "Handover instead of
//! stop-then-start"): `<id>` (slot a, what `render` produces) and `<id>-b` (slot b, derived
//! from it here). A structural change registers the slot that is not serving, gates it next to
//! the serving one, and only then stops the old slot. Both share the public ports
//! (`IgnoreCollision`, Traefik's `reusePort`); each has its own internal (API and ping) port,
//! slot b's [`SLOT_B_PORT_OFFSET`] above the document's, so the gate reads the instance it gates.

use serde_json::Value;

use super::{INTERNAL_PORT_LABEL, service_name};
use crate::render::traefik::INTERNAL_ENTRY_POINT;

/// Job Meta naming the slot (`a` or `b`) a job fills.
pub const META_SLOT: &str = "proxy-operator/slot";
/// Slot b's internal port is the document's dashboard port plus this.
pub const SLOT_B_PORT_OFFSET: u16 = 1;
const SLOT_B_SUFFIX: &str = "-b";

/// One of the two job slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Slot {
    /// `<id>`, the job `render` produces.
    #[default]
    A,
    /// `<id>-b`.
    B,
}

impl Slot {
    /// The Meta value.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The other slot.
    #[must_use]
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// This slot's job ID for the document's job ID `base`.
    #[must_use]
    pub fn job_id(self, base: &str) -> String {
        match self {
            Slot::A => base.to_owned(),
            Slot::B => format!("{base}{SLOT_B_SUFFIX}"),
        }
    }

    /// Which slot of `base` the job `job_id` is, if either.
    #[must_use]
    pub fn of(job_id: &str, base: &str) -> Option<Slot> {
        if job_id == base {
            Some(Slot::A)
        } else if job_id.strip_suffix(SLOT_B_SUFFIX) == Some(base) {
            Some(Slot::B)
        } else {
            None
        }
    }

    /// How far this slot's internal port is from the document's.
    #[must_use]
    pub fn port_offset(self) -> u16 {
        match self {
            Slot::A => 0,
            Slot::B => SLOT_B_PORT_OFFSET,
        }
    }
}

/// Why slot b's job cannot be derived from slot a's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The job is not a rendered Traefik job of one task group with an internal port.
    #[error("the rendered job has no {0}, so it has no second handover slot")]
    Shape(&'static str),
    /// Slot b's internal port is taken by another port of the job, or overflows.
    #[error(
        "the second handover slot needs port {port} for its API (the dashboard port + {SLOT_B_PORT_OFFSET}), which {why}; move spec.dashboard.address so the next port is free"
    )]
    Port {
        /// The port slot b would use.
        port: u32,
        /// What holds it.
        why: String,
    },
}

/// The job of `slot` for a rendered slot-a job. Slot a is `job` itself; slot b gets its own ID,
/// name, service name, slot Meta and, for Traefik, internal port (in the group's ports and in
/// the static config the job embeds). A Caddy job in slot b (a switch from a Traefik that
/// serves from slot b, changed in place) keeps its ports: Caddy is never handed over. Its
/// `spec-digest` Meta stays the document's, so either slot running a document counts as that
/// document running.
///
/// # Errors
/// [`SlotError`] when the job has not the shape `render` gives a Traefik job, or slot b's
/// internal port collides with another port of the job.
pub fn slot_job(job: &Value, slot: Slot) -> Result<Value, SlotError> {
    if slot == Slot::A {
        return Ok(job.clone());
    }
    let mut job = job.clone();
    let base = job
        .get("ID")
        .and_then(Value::as_str)
        .ok_or(SlotError::Shape("ID"))?
        .to_owned();
    let id = slot.job_id(&base);
    job["ID"] = Value::from(id.clone());
    job["Name"] = Value::from(id.clone());
    job.get_mut("Meta")
        .and_then(Value::as_object_mut)
        .ok_or(SlotError::Shape("Meta"))?
        .insert(META_SLOT.to_owned(), Value::from(slot.name()));
    let traefik = job
        .pointer(&format!(
            "/Meta/{}",
            crate::render::META_PROXY.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some("traefik");
    let group = job
        .get_mut("TaskGroups")
        .and_then(|g| g.get_mut(0))
        .ok_or(SlotError::Shape("task group"))?;
    for service in group
        .get_mut("Services")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        service["Name"] = Value::from(service_name(&id));
    }
    if !traefik {
        return Ok(job);
    }
    let ports = group
        .get_mut("Networks")
        .and_then(|n| n.get_mut(0))
        .and_then(|n| n.get_mut("ReservedPorts"))
        .and_then(Value::as_array_mut)
        .ok_or(SlotError::Shape("reserved ports"))?;
    let internal = ports
        .iter()
        .position(|p| p.get("Label").and_then(Value::as_str) == Some(INTERNAL_PORT_LABEL))
        .ok_or(SlotError::Shape("internal port"))?;
    let old = ports[internal]
        .get("Value")
        .and_then(Value::as_u64)
        .ok_or(SlotError::Shape("internal port value"))?;
    let new = old + u64::from(slot.port_offset());
    if new > u64::from(u16::MAX) {
        return Err(SlotError::Port {
            port: u32::try_from(new).unwrap_or(u32::MAX),
            why: "is beyond 65535".into(),
        });
    }
    if let Some(p) = ports
        .iter()
        .find(|p| p.get("Value").and_then(Value::as_u64) == Some(new))
    {
        let label = p.get("Label").and_then(Value::as_str).unwrap_or("?");
        return Err(SlotError::Port {
            port: u32::try_from(new).unwrap_or(u32::MAX),
            why: format!("is the job's {label:?} port"),
        });
    }
    ports[internal]["Value"] = Value::from(new);
    let task = group
        .get_mut("Tasks")
        .and_then(|t| t.get_mut(0))
        .ok_or(SlotError::Shape("task"))?;
    let template = task
        .get_mut("Templates")
        .and_then(|t| t.get_mut(0))
        .and_then(|t| t.get_mut("EmbeddedTmpl"))
        .ok_or(SlotError::Shape("config template"))?;
    let text = template
        .as_str()
        .ok_or(SlotError::Shape("config template"))?;
    let mut config: Value =
        serde_saphyr::from_str(text).map_err(|_| SlotError::Shape("Traefik static config"))?;
    let address = config
        .get_mut("entryPoints")
        .and_then(|e| e.get_mut(INTERNAL_ENTRY_POINT))
        .and_then(|e| e.get_mut("address"))
        .ok_or(SlotError::Shape("internal entry point"))?;
    let host = address
        .as_str()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(host, _)| host.to_owned())
        .ok_or(SlotError::Shape("internal entry point address"))?;
    *address = Value::from(format!("{host}:{new}"));
    *template = Value::from(
        serde_saphyr::to_string(&config).map_err(|_| SlotError::Shape("Traefik static config"))?,
    );
    Ok(job)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;

    fn job() -> Value {
        serde_json::json!({
            "ID": "edge", "Name": "edge",
            "Meta": {"proxy-operator/slot": "a", "proxy-operator/spec-digest": "d1", "proxy-operator/proxy": "traefik"},
            "TaskGroups": [{
                "Networks": [{"ReservedPorts": [
                    {"Label": "web", "Value": 8080, "IgnoreCollision": true},
                    {"Label": "internal", "Value": 9000}
                ]}],
                "Services": [{"Name": "edge"}],
                "Tasks": [{"Templates": [{"EmbeddedTmpl":
                    "entryPoints:\n  web:\n    address: ':8080'\n    reusePort: true\n  traefik:\n    address: 127.0.0.1:9000\n"}]}]
            }]
        })
    }

    #[test]
    fn slot_b_has_its_own_id_service_meta_and_api_port_and_keeps_the_shared_ports_and_digest() {
        let b = slot_job(&job(), Slot::B).unwrap();
        assert_eq!(b["ID"], "edge-b");
        assert_eq!(b["Name"], "edge-b");
        assert_eq!(b["Meta"][META_SLOT], "b");
        assert_eq!(b["Meta"]["proxy-operator/spec-digest"], "d1");
        assert_eq!(b["TaskGroups"][0]["Services"][0]["Name"], "edge-b");
        let ports = &b["TaskGroups"][0]["Networks"][0]["ReservedPorts"];
        assert_eq!(ports[0]["Value"], 8080);
        assert_eq!(ports[1]["Value"], 9001);
        let yaml = b["TaskGroups"][0]["Tasks"][0]["Templates"][0]["EmbeddedTmpl"]
            .as_str()
            .unwrap();
        let config: Value = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(
            config["entryPoints"]["traefik"]["address"],
            "127.0.0.1:9001"
        );
        assert_eq!(config["entryPoints"]["web"]["address"], ":8080");
        assert_eq!(config["entryPoints"]["web"]["reusePort"], true);
    }

    #[test]
    fn a_caddy_job_in_slot_b_is_only_renamed_and_keeps_its_ports() {
        let mut j = job();
        j["Meta"]["proxy-operator/proxy"] = "caddy".into();
        let b = slot_job(&j, Slot::B).unwrap();
        assert_eq!(b["ID"], "edge-b");
        assert_eq!(
            b["TaskGroups"][0]["Networks"],
            j["TaskGroups"][0]["Networks"]
        );
        assert_eq!(b["TaskGroups"][0]["Tasks"], j["TaskGroups"][0]["Tasks"]);
    }

    #[test]
    fn slot_a_is_the_rendered_job_unchanged() {
        assert_eq!(slot_job(&job(), Slot::A).unwrap(), job());
    }

    #[test]
    fn slot_b_is_refused_naming_the_port_when_the_next_port_is_an_entry_point() {
        let mut j = job();
        j["TaskGroups"][0]["Networks"][0]["ReservedPorts"][0]["Value"] = 9001.into();
        let err = slot_job(&j, Slot::B).unwrap_err();
        assert!(err.to_string().contains("9001"), "{err}");
        assert!(err.to_string().contains("\"web\""), "{err}");
    }

    #[test]
    fn slots_are_recognised_by_job_id_and_nothing_else_is() {
        assert_eq!(Slot::of("edge", "edge"), Some(Slot::A));
        assert_eq!(Slot::of("edge-b", "edge"), Some(Slot::B));
        assert_eq!(Slot::of("edge-c", "edge"), None);
        assert_eq!(Slot::of("other", "edge"), None);
        assert_eq!(Slot::B.job_id("edge"), "edge-b");
    }
}
