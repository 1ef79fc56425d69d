//! Nomad-native service registrations.

use super::*;

impl Store {
    // === services ===

    /// Adds or replaces a Nomad-native service registration.
    pub fn upsert_service(&mut self, mut reg: ServiceReg) {
        let index = self.next_index();
        reg.create_index = self
            .services
            .get(&reg.id)
            .map(|r| r.create_index)
            .unwrap_or(index);
        reg.modify_index = index;
        let (id, ns, name) = (
            reg.id.clone(),
            reg.namespace.clone(),
            reg.service_name.clone(),
        );
        let payload = json!({"Service": reg});
        self.services.insert(id, reg);
        self.tables.services = index;
        self.emit(
            "Service",
            "ServiceRegistration",
            &name,
            &ns,
            vec![name.clone()],
            payload,
        );
    }

    /// Removes a service registration.
    pub fn remove_service(&mut self, id: &str) -> bool {
        let Some(reg) = self.services.remove(id) else {
            return false;
        };
        let index = self.next_index();
        self.tables.services = index;
        let (ns, name) = (reg.namespace.clone(), reg.service_name.clone());
        self.emit(
            "Service",
            "ServiceDeregistration",
            &name,
            &ns,
            vec![name.clone()],
            json!({"Service": reg}),
        );
        true
    }
}
