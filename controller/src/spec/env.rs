//! The seed's (HinD's) environment variables → a ProxyConfig document.
//!
//! `run --bootstrap-from-env` writes this document when the config key is absent, so existing
//! setups keep working unchanged. Pure: the caller passes the lookup.

use super::{
    ApiVersion, DiscoveryPrimary, DomainSuffix, Metadata, ProxyConfig, ProxyConfigKind,
    ProxyConfigSpec, ProxyKind,
};

/// An environment variable with a value the operator cannot map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// One or more variables are invalid; all are listed.
    #[error("failed to map the environment to a ProxyConfig: {}", .0.iter().map(|(var, msg)| format!("{var}: {msg}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
}

/// Builds a document from `PROXY_SERVER` (caddy|traefik, default caddy), `DOMAIN_SUFFIX`
/// (default `localhost`), `TRAEFIK_PROVIDER_PRIMARY` (nomad|consul, default nomad) and
/// `TRAEFIK_API_INSECURE` (Go booleans, default false). Unset or empty variables take HinD's
/// defaults; values are case-insensitive and trimmed. Every other field keeps its default.
pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<ProxyConfig, EnvError> {
    let get = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut problems = Vec::new();
    let mut spec = ProxyConfigSpec::default();

    if let Some(value) = get("PROXY_SERVER") {
        match value.to_ascii_lowercase().as_str() {
            "caddy" => spec.proxy = ProxyKind::Caddy,
            "traefik" => spec.proxy = ProxyKind::Traefik,
            _ => problems.push((
                "PROXY_SERVER".to_owned(),
                format!("{value:?} is not a proxy; expected caddy or traefik"),
            )),
        }
    }
    if let Some(value) = get("DOMAIN_SUFFIX") {
        let lowered = value.to_ascii_lowercase();
        if super::validate::is_hostname(&lowered) {
            spec.domain_suffix = DomainSuffix(lowered);
        } else {
            problems.push((
                "DOMAIN_SUFFIX".to_owned(),
                format!("{value:?} is not a domain; expected DNS labels separated by dots, e.g. example.com"),
            ));
        }
    }
    if let Some(value) = get("TRAEFIK_PROVIDER_PRIMARY") {
        match value.to_ascii_lowercase().as_str() {
            "nomad" => spec.discovery.primary = DiscoveryPrimary::Nomad,
            "consul" | "consulcatalog" => spec.discovery.primary = DiscoveryPrimary::Consul,
            _ => problems.push((
                "TRAEFIK_PROVIDER_PRIMARY".to_owned(),
                format!("{value:?} is not a provider; expected nomad or consul"),
            )),
        }
    }
    if let Some(value) = get("TRAEFIK_API_INSECURE") {
        // Go's strconv.ParseBool, which Traefik itself uses for this variable.
        match value.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => spec.dashboard.insecure = true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => spec.dashboard.insecure = false,
            _ => problems.push((
                "TRAEFIK_API_INSECURE".to_owned(),
                format!("{value:?} is not a boolean; expected true or false"),
            )),
        }
    }
    if spec.dashboard.insecure && spec.proxy == ProxyKind::Caddy {
        problems.push((
            "TRAEFIK_API_INSECURE".to_owned(),
            "is true but PROXY_SERVER selects caddy; it only applies to Traefik".to_owned(),
        ));
    }
    if !problems.is_empty() {
        return Err(EnvError::Invalid(problems));
    }
    Ok(ProxyConfig {
        api_version: ApiVersion::V1alpha1,
        kind: ProxyConfigKind::ProxyConfig,
        metadata: Metadata::default(),
        spec,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::spec::validate;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn empty_environment_gives_hind_defaults() {
        let config = from_env(env(&[])).expect("defaults map");
        assert_eq!(config.spec.proxy, ProxyKind::Caddy);
        assert_eq!(config.spec.domain_suffix.0, "localhost");
        assert_eq!(config.spec.discovery.primary, DiscoveryPrimary::Nomad);
        assert!(!config.spec.dashboard.insecure);
        assert_eq!(config.spec.tls.cert_dir, "/pv/CERTS");
        validate(&config).expect("the default document validates");
    }

    #[test]
    fn traefik_settings_map_onto_their_fields() {
        let config = from_env(env(&[
            ("PROXY_SERVER", "Traefik"),
            ("DOMAIN_SUFFIX", "apps.example.com"),
            ("TRAEFIK_PROVIDER_PRIMARY", "consul"),
            ("TRAEFIK_API_INSECURE", "true"),
        ]))
        .expect("valid env maps");
        assert_eq!(config.spec.proxy, ProxyKind::Traefik);
        assert_eq!(config.spec.domain_suffix.0, "apps.example.com");
        assert_eq!(config.spec.discovery.primary, DiscoveryPrimary::Consul);
        assert!(config.spec.dashboard.insecure);
        validate(&config).expect("mapped document validates");
    }

    #[test]
    fn empty_variables_fall_back_to_defaults() {
        let config = from_env(env(&[("PROXY_SERVER", ""), ("DOMAIN_SUFFIX", "  ")])).expect("maps");
        assert_eq!(config.spec.proxy, ProxyKind::Caddy);
        assert_eq!(config.spec.domain_suffix.0, "localhost");
    }

    #[test]
    fn every_bad_variable_is_named_in_one_error() {
        let err = from_env(env(&[
            ("PROXY_SERVER", "nginx"),
            ("DOMAIN_SUFFIX", "bad domain"),
            ("TRAEFIK_PROVIDER_PRIMARY", "etcd"),
            ("TRAEFIK_API_INSECURE", "yes"),
        ]))
        .expect_err("all four are invalid");
        let EnvError::Invalid(problems) = &err;
        let vars: Vec<&str> = problems.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            vars,
            [
                "PROXY_SERVER",
                "DOMAIN_SUFFIX",
                "TRAEFIK_PROVIDER_PRIMARY",
                "TRAEFIK_API_INSECURE"
            ]
        );
        assert!(
            err.to_string()
                .contains("\"nginx\" is not a proxy; expected caddy or traefik"),
            "{err}"
        );
    }

    #[test]
    fn insecure_dashboard_with_caddy_is_refused_rather_than_ignored() {
        let err =
            from_env(env(&[("TRAEFIK_API_INSECURE", "1")])).expect_err("caddy has no api.insecure");
        assert!(err.to_string().contains("TRAEFIK_API_INSECURE"), "{err}");
    }
}
