//! `spec.discovery`: where Traefik finds services (Consul catalog, Nomad services) and how often.

use std::time::Duration;

use super::field::Validator;
use crate::spec::{Discovery, Scheme};

/// The discovery durations, parsed (`None` where invalid).
pub(super) struct Intervals {
    pub(super) consul_refresh: Option<Duration>,
    pub(super) nomad_refresh: Option<Duration>,
    pub(super) throttle: Option<Duration>,
}

/// Checks `spec.discovery`.
pub(super) fn check(v: &mut Validator, d: &Discovery) -> Intervals {
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

    Intervals {
        consul_refresh,
        nomad_refresh,
        throttle,
    }
}
