//! `spec.tls.acme.caRoots`: a private ACME directory (step-ca, Pebble, an internal PKI) is
//! trusted through the proxy's own mechanism, added to the system roots, never instead of them.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

use proxy_operator::proxy;
use proxy_operator::render::RenderContext;
use proxy_operator::spec::{self, ValidatedSpec};
use serde_json::Value;

fn doc(proxy: &str, acme: &str) -> String {
    format!(
        "apiVersion: proxy-operator.io/v1alpha1\nkind: ProxyConfig\nspec:\n  proxy: {proxy}\n  domainSuffix: example.com\n  tls:\n    certDir: /pv/CERTS\n    acme:\n      email: ops@example.com\n      caServer: https://ca.internal:9000/acme/directory\n{acme}"
    )
}

fn load(text: &str) -> ValidatedSpec {
    spec::load(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn env(rendered: &proxy_operator::render::Rendered) -> &Value {
    &rendered.job["TaskGroups"][0]["Tasks"][0]["Env"]
}

#[test]
fn traefik_trusts_the_ca_roots_through_lego_and_keeps_the_system_roots() {
    let spec = load(&doc(
        "traefik",
        "      caRoots: [internal-root.pem, /etc/pki/extra.pem]\n",
    ));
    let r = proxy::render(&spec, &RenderContext::default(), "proxy-operator/traefik/").unwrap();
    assert_eq!(
        env(&r)["LEGO_CA_CERTIFICATES"],
        "/pv/CERTS/internal-root.pem:/etc/pki/extra.pem",
        "relative roots resolve under certDir; lego separates paths with ':'"
    );
    assert_eq!(env(&r)["LEGO_CA_SYSTEM_CERT_POOL"], "true");
}

#[test]
fn caddy_trusts_the_ca_roots_in_its_acme_issuer() {
    let spec = load(&doc("caddy", "      caRoots: [internal-root.pem]\n"));
    let r = proxy::render(&spec, &RenderContext::default(), "proxy-operator/traefik/").unwrap();
    let config: Value = serde_json::from_str(
        r.job["TaskGroups"][0]["Tasks"][0]["Templates"][0]["EmbeddedTmpl"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let issuer = &config["apps"]["tls"]["automation"]["policies"][0]["issuers"][0];
    assert_eq!(issuer["module"], "acme");
    assert_eq!(issuer["ca"], "https://ca.internal:9000/acme/directory");
    assert_eq!(
        issuer["trusted_roots_pem_files"],
        serde_json::json!(["/pv/CERTS/internal-root.pem"])
    );
    assert!(
        env(&r).get("LEGO_CA_CERTIFICATES").is_none(),
        "Caddy does not read lego's variable"
    );
}

#[test]
fn without_ca_roots_nothing_extra_is_rendered() {
    let r = proxy::render(
        &load(&doc("traefik", "")),
        &RenderContext::default(),
        "proxy-operator/traefik/",
    )
    .unwrap();
    assert!(env(&r).get("LEGO_CA_CERTIFICATES").is_none(), "{}", env(&r));
}

#[test]
fn a_ca_root_that_is_inline_pem_or_holds_a_colon_is_refused_naming_the_entry() {
    for (root, needle) in [
        (
            "\"-----BEGIN CERTIFICATE-----\"",
            "inline PEM is not accepted",
        ),
        ("a:b.pem", "must not contain ':'"),
        ("../outside.pem", "must not contain '..'"),
    ] {
        let text = doc("traefik", &format!("      caRoots: [ok.pem, {root}]\n"));
        let errors = match spec::load(text.as_bytes()) {
            Ok(_) => panic!("should be refused:\n{text}"),
            Err(e) => e.field_errors(),
        };
        assert!(
            errors
                .iter()
                .any(|e| e.path == "spec.tls.acme.caRoots[1]" && e.message.contains(needle)),
            "{root}: {errors:#?}"
        );
    }
}
