//! `spec.discovery`: where Traefik finds services (Consul catalog, Nomad services) and how often.

use super::field::Validator;
use crate::spec::model::{ConsulDiscovery, Discovery, NomadDiscovery};
use crate::spec::{self, Scheme};

/// Checks `spec.discovery` and resolves it (durations parsed, the scheme spelled out).
pub(super) fn check(v: &mut Validator, d: &spec::Discovery) -> Discovery {
    if d.consul.address.contains("://") {
        v.error(
            "spec.discovery.consul.address",
            format!("{:?} must be host:port without a scheme (e.g. 127.0.0.1:8500); set scheme: https for TLS", d.consul.address),
        );
    } else {
        v.host_port("spec.discovery.consul.address", &d.consul.address);
    }
    if let Some(dc) = &d.consul.datacenter {
        v.identifier("spec.discovery.consul.datacenter", dc);
    }
    if let Some(ca) = &d.consul.ca_file {
        v.absolute_path("spec.discovery.consul.caFile", ca);
        if d.consul.scheme != Scheme::Https {
            v.error(
                "spec.discovery.consul.caFile",
                "is used only with scheme: https; set scheme: https or remove caFile",
            );
        }
    }
    let consul_refresh = v.refresh_interval(
        "spec.discovery.consul.refreshInterval",
        &d.consul.refresh_interval,
    );
    let nomad_refresh = v.refresh_interval(
        "spec.discovery.nomad.refreshInterval",
        &d.nomad.refresh_interval,
    );
    let throttle = v.duration("spec.discovery.throttleDuration", &d.throttle_duration);
    v.http_url(
        "spec.discovery.nomad.address",
        &d.nomad.address,
        "http://127.0.0.1:4646",
    );
    if let Some(ns) = &d.nomad.namespace {
        v.identifier("spec.discovery.nomad.namespace", ns);
    }

    Discovery {
        primary: d.primary,
        nomad: NomadDiscovery {
            address: d.nomad.address.clone(),
            namespace: d.nomad.namespace.clone(),
            refresh_interval: nomad_refresh.unwrap_or_default(),
            exposed_by_default: d.nomad.exposed_by_default,
            watch: d.nomad.watch,
        },
        consul: ConsulDiscovery {
            address: d.consul.address.clone(),
            scheme: match d.consul.scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            }
            .to_string(),
            datacenter: d.consul.datacenter.clone(),
            ca_file: d.consul.ca_file.clone(),
            refresh_interval: consul_refresh.unwrap_or_default(),
            exposed_by_default: d.consul.exposed_by_default,
        },
        throttle: throttle.unwrap_or_default(),
    }
}
