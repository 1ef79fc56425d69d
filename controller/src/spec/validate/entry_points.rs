//! `spec.entryPoints`: names, addresses, redirects, and listeners that would share a port.

use super::Listener;
use super::field::{ListenAddress, Validator};
use crate::spec::{EntryPoint, EntryPoints};

/// The Nomad port label of an entry point: labels allow only `[A-Za-z0-9_]`, so every other
/// character becomes `_`. Validation refuses names that collide this way; the renderer labels
/// the job's ports with it.
pub fn port_label(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn entry_point_path(name: &str) -> String {
    match name {
        "web" | "websecure" => name.to_owned(),
        other => format!("extra.{other}"),
    }
}

/// Checks that no two listeners (entry points, metrics, dashboard) claim the same port.
pub(super) fn check_sockets(
    v: &mut Validator,
    listeners: &[Listener],
    metrics_address: Option<&ListenAddress>,
    dashboard_address: Option<&ListenAddress>,
) {
    let mut sockets: Vec<(String, ListenAddress)> = listeners
        .iter()
        .map(|l| {
            (
                format!("spec.entryPoints.{}.address", entry_point_path(&l.name)),
                l.address.clone(),
            )
        })
        .collect();
    if let Some(a) = metrics_address {
        sockets.push(("spec.metrics.address".into(), a.clone()));
    }
    if let Some(a) = dashboard_address {
        sockets.push(("spec.dashboard.address".into(), a.clone()));
    }
    for (i, (path, addr)) in sockets.iter().enumerate() {
        if let Some((other, _)) = sockets[..i].iter().find(|(_, a)| a.overlaps(addr)) {
            v.error(
                path,
                format!("{addr} conflicts with {other}; every listener needs its own port (Nomad reserves host ports, whatever the address)"),
            );
        }
    }
}

impl Validator {
    pub(super) fn entry_points(&mut self, eps: &EntryPoints) -> Vec<Listener> {
        let mut all: Vec<(String, &EntryPoint)> = vec![
            ("web".into(), &eps.web),
            ("websecure".into(), &eps.websecure),
        ];
        for (name, ep) in &eps.extra {
            let path = format!("spec.entryPoints.extra.{name}");
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                self.error(&path, format!("{name:?} is not an entry point name; start with a letter, then letters, digits, '-' or '_'"));
            } else if ["web", "websecure", "metrics", "traefik", "internal"]
                .iter()
                .any(|r| port_label(name) == port_label(r))
            {
                self.error(&path, format!("{name:?} is reserved; web and websecure are set directly under entryPoints, metrics, traefik and internal are used by the operator"));
            } else if let Some((other, _)) =
                all.iter().find(|(n, _)| port_label(n) == port_label(name))
            {
                self.error(&path, format!("{name:?} and {other:?} become the same Nomad port label {:?} ('-' maps to '_'); rename one", port_label(name)));
            }
            all.push((name.clone(), ep));
        }
        self.entry_point_names = all.iter().map(|(n, _)| n.clone()).collect();
        let mut listeners = Vec::new();
        for (name, ep) in &all {
            let base = format!("spec.entryPoints.{}", entry_point_path(name));
            let address = self.listen(&format!("{base}.address"), &ep.address);
            if let Some(target) = &ep.redirect_to {
                let path = format!("{base}.redirectTo");
                match all.iter().find(|(n, _)| n == target) {
                    None => {
                        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
                        let mut msg = format!(
                            "entry point {target:?} does not exist; known: {}",
                            names.join(", ")
                        );
                        if let Some(best) = crate::spec::parse::closest(target, &names) {
                            msg.push_str(&format!("; did you mean {best:?}?"));
                        }
                        self.error(path, msg);
                    }
                    Some((n, _)) if n == name => {
                        self.error(path, "an entry point cannot redirect to itself")
                    }
                    Some((n, t)) if t.redirect_to.is_some() => {
                        self.error(path, format!("{n:?} redirects too; redirect to an entry point that serves traffic"));
                    }
                    Some(_) => {}
                }
            }
            if let Some(address) = address {
                listeners.push(Listener {
                    name: name.clone(),
                    address,
                    redirect_to: ep.redirect_to.clone(),
                });
            }
        }
        listeners
    }
}
