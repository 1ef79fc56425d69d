//! `spec.entryPoints`, `spec.metrics` and `spec.dashboard`: every listener of the proxy, their
//! names, addresses and redirects, and listeners that would share a port.

use super::field::{ListenAddress, Validator};
use crate::spec::model::{Dashboard, EntryPoint, ListenAddr};
use crate::spec::{self, EntryPoints, ProxyConfigSpec, ProxyKind};

/// Where the internal listener goes when the spec turns the dashboard off: Traefik still needs
/// an entry point for `/ping` and the API the health gate reads; loopback keeps it private.
const FALLBACK_INTERNAL: (&str, u16) = ("127.0.0.1", 8080);

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

/// Checks `spec.metrics` and `spec.dashboard`, and that no two listeners (entry points,
/// metrics, dashboard) claim the same port. Returns the metrics entry point (Traefik only:
/// Caddy serves metrics on its admin API) and the dashboard with its internal listener.
pub(super) fn check_listeners(
    v: &mut Validator,
    spec: &ProxyConfigSpec,
    entry_points: &[EntryPoint],
) -> (Option<ListenAddr>, Dashboard) {
    let metrics_address = if spec.metrics.prometheus {
        v.listen("spec.metrics.address", &spec.metrics.address)
    } else {
        None
    };
    let dashboard_address = if spec.dashboard.enabled {
        v.listen("spec.dashboard.address", &spec.dashboard.address)
    } else {
        None
    };
    if spec.dashboard.insecure && !spec.dashboard.enabled {
        v.error(
            "spec.dashboard.insecure",
            "insecure: true needs enabled: true; there is no dashboard to expose",
        );
    }
    if spec.dashboard.insecure && spec.proxy == ProxyKind::Caddy {
        v.error("spec.dashboard.insecure", "insecure is Traefik-only (api.insecure); Caddy's admin API always stays on localhost. Remove it or set proxy: traefik");
    }
    let mut sockets: Vec<(String, ListenAddr)> = entry_points
        .iter()
        .map(|l| {
            (
                format!("spec.entryPoints.{}.address", entry_point_path(&l.name)),
                l.address.clone(),
            )
        })
        .collect();
    if let Some(a) = &metrics_address {
        sockets.push(("spec.metrics.address".into(), a.into()));
    }
    if let Some(a) = &dashboard_address {
        sockets.push(("spec.dashboard.address".into(), a.into()));
    }
    // Hosts do not matter: the job reserves each port as a static host port, and Nomad refuses
    // one port reserved twice ("Static port 80 already reserved") even for two addresses.
    for (i, (path, addr)) in sockets.iter().enumerate() {
        if let Some((other, _)) = sockets[..i].iter().find(|(_, a)| a.port == addr.port) {
            v.error(
                path,
                format!("{} conflicts with {other}; every listener needs its own port (Nomad reserves host ports, whatever the address)", addr.to_addr_string()),
            );
        }
    }
    let metrics = match spec.proxy {
        ProxyKind::Traefik => metrics_address.as_ref().map(ListenAddr::from),
        ProxyKind::Caddy => None,
    };
    let dashboard = Dashboard {
        enabled: spec.dashboard.enabled,
        insecure: spec.dashboard.insecure,
        address: internal_address(spec.proxy, dashboard_address.as_ref()),
    };
    (metrics, dashboard)
}

/// The proxy's internal listener, which the health gate probes: Traefik's `traefik` entry point
/// (`/ping`, `/api/rawdata`) at `dashboard.address`, or Caddy's admin API, which always stays on
/// `localhost` at the dashboard's port. With the dashboard off, Traefik's falls back to
/// `127.0.0.1:8080`, since `/ping` and the API are still needed.
fn internal_address(proxy: ProxyKind, dashboard: Option<&ListenAddress>) -> ListenAddr {
    let addr = dashboard.map(ListenAddr::from).unwrap_or(ListenAddr {
        host: FALLBACK_INTERNAL.0.to_string(),
        port: FALLBACK_INTERNAL.1,
    });
    match proxy {
        ProxyKind::Traefik => addr,
        ProxyKind::Caddy => ListenAddr {
            host: "localhost".to_string(),
            port: addr.port,
        },
    }
}

impl Validator {
    pub(super) fn entry_points(&mut self, eps: &EntryPoints) -> Vec<EntryPoint> {
        let mut all: Vec<(String, &spec::EntryPoint)> = vec![
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
                listeners.push(EntryPoint {
                    name: name.clone(),
                    address: ListenAddr::from(&address),
                    tls: false,
                    redirect_to: ep.redirect_to.clone(),
                });
            }
        }
        // An entry point serves TLS when it is `websecure` or the target of an HTTPS redirect.
        let targets: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.redirect_to.clone())
            .collect();
        for l in &mut listeners {
            l.tls = l.name == "websecure" || targets.contains(&l.name);
        }
        listeners
    }
}
