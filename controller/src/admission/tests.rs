use clap::Parser;

use super::*;

fn spec(body: &str) -> ValidatedSpec {
    let doc = format!(
        "apiVersion: {}\nkind: {}\nspec:\n{body}",
        spec::API_VERSION,
        spec::KIND
    );
    spec::load(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

fn limits() -> AdminLimits {
    AdminLimits::defaults("proxy-operator")
}

/// The single error of `body` under the default limits.
fn only_error(body: &str) -> FieldError {
    let errors = admit(&spec(body), &limits());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

fn assert_names(e: &FieldError, path: &str, flag: &str) {
    assert_eq!(e.path, path, "{e}");
    assert!(e.message.contains(flag), "{e} does not name {flag}");
}

#[test]
fn the_pinned_images_are_the_ones_a_document_without_a_driver_resolves_to() {
    let images = pinned_images();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(
        images
            .iter()
            .any(|(p, i)| *p == ProxyKind::Traefik && i.starts_with("traefik:v"))
    );
    assert!(
        images
            .iter()
            .any(|(p, i)| *p == ProxyKind::Caddy && i.starts_with("caddy:"))
    );
}

#[test]
fn a_default_document_of_either_proxy_is_admitted_by_the_default_limits() {
    for proxy in ["traefik", "caddy"] {
        let errors = admit(&spec(&format!("  proxy: {proxy}\n")), &limits());
        assert_eq!(errors, Vec::new(), "{proxy}");
    }
}

#[test]
fn etc_shadow_as_a_users_file_is_refused_and_names_users_dir() {
    let e = only_error(
        "  proxy: traefik\n  middlewares:\n    basicAuth:\n      usersFrom:\n        file: /etc/shadow\n",
    );
    assert_names(
        &e,
        "spec.middlewares.basicAuth.usersFrom.file",
        "--users-dir",
    );
}

#[test]
fn a_users_file_outside_the_users_dir_is_refused_and_one_inside_is_admitted() {
    let mut l = limits();
    l.users_dir = Some(PathBuf::from("/srv/users"));
    let body = |f: &str| {
        format!(
            "  proxy: traefik\n  middlewares:\n    basicAuth:\n      usersFrom:\n        file: {f}\n"
        )
    };
    let errors = admit(&spec(&body("/etc/shadow")), &l);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_names(
        &errors[0],
        "spec.middlewares.basicAuth.usersFrom.file",
        "--users-dir /srv/users",
    );
    assert_eq!(
        admit(&spec(&body("/srv/usersX/htpasswd")), &l).len(),
        1,
        "a sibling with the same prefix is outside"
    );
    assert_eq!(admit(&spec(&body("/srv/users/htpasswd")), &l), Vec::new());
}

#[test]
fn a_consul_key_outside_the_secrets_prefix_is_refused_and_names_secrets_prefix() {
    let body = |k: &str| {
        format!(
            "  proxy: traefik\n  middlewares:\n    basicAuth:\n      usersFrom:\n        consulKey: {k}\n"
        )
    };
    let e = only_error(&body("vault/other-team/creds"));
    assert_names(
        &e,
        "spec.middlewares.basicAuth.usersFrom.consulKey",
        "--secrets-prefix",
    );
    // The prefix itself, and a look-alike sibling, are not under it.
    only_error(&body("proxy-operator/secrets-old/users"));
    assert_eq!(
        admit(&spec(&body("proxy-operator/secrets/basic-auth")), &limits()),
        Vec::new()
    );
}

#[test]
fn a_policy_set_s_users_references_are_held_to_the_same_limits_as_the_entry_point_s() {
    let set = |proxy: &str, from: &str| {
        format!(
            "  proxy: {proxy}\n  policies:\n    admin:\n      basicAuth: {{usersFrom: {from}}}\n"
        )
    };
    for proxy in ["traefik", "caddy"] {
        let e = only_error(&set(proxy, "{consulKey: vault/other-team/creds}"));
        assert_names(
            &e,
            "spec.policies.admin.basicAuth.usersFrom.consulKey",
            "--secrets-prefix",
        );
        assert_eq!(
            admit(
                &spec(&set(proxy, "{consulKey: proxy-operator/secrets/admin}")),
                &limits()
            ),
            Vec::new()
        );
    }
    // Caddy's accounts are read by the operator on its host: --users-dir applies.
    let e = only_error(&set("caddy", "{file: /etc/shadow}"));
    assert_names(
        &e,
        "spec.policies.admin.basicAuth.usersFrom.file",
        "--users-dir",
    );
    // Traefik reads a set's file itself, on the proxy's node: not the operator's host.
    assert_eq!(
        admit(&spec(&set("traefik", "{file: /etc/htpasswd}")), &limits()),
        Vec::new()
    );
}

#[test]
fn kv_prefix_matching_refuses_the_bare_prefix_and_dot_segments() {
    let p = "proxy-operator/secrets/";
    assert!(under_kv_prefix("proxy-operator/secrets/a/b", p));
    assert!(!under_kv_prefix("proxy-operator/secrets/", p));
    assert!(!under_kv_prefix("proxy-operator/secrets/../config", p));
    assert!(!under_kv_prefix("proxy-operator/secrets//x", p));
    assert!(!under_kv_prefix("proxy-operator/secretsX/x", p));
}

#[test]
fn a_disallowed_image_is_refused_with_the_flag_that_would_allow_it() {
    let e = only_error(
        "  proxy: traefik\n  job:\n    driver:\n      docker:\n        image: evil/traefik:latest\n",
    );
    assert_names(
        &e,
        "spec.job.driver.docker.image",
        "--allowed-image traefik=evil/traefik:latest",
    );
}

#[test]
fn an_image_pattern_with_a_star_allows_any_completion_of_its_stem() {
    let mut l = limits();
    l.images = vec![(ProxyKind::Traefik, "traefik:v3.*".to_owned())];
    let body = |v: &str| format!("  proxy: traefik\n  job:\n    version: \"{v}\"\n");
    assert_eq!(admit(&spec(&body("3.8.0")), &l), Vec::new());
    assert_eq!(admit(&spec(&body("4.0.0")), &l).len(), 1);
}

#[test]
fn the_images_of_one_proxy_do_not_allow_the_other() {
    let mut l = limits();
    l.images = vec![(ProxyKind::Caddy, "traefik:v3.7.15".to_owned())];
    let errors = admit(
        &spec("  proxy: traefik\n  job:\n    version: \"3.7.15\"\n"),
        &l,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn raw_exec_is_refused_by_default_naming_both_flags() {
    let errors = admit(
        &spec("  proxy: caddy\n  job:\n    driver:\n      rawExec:\n        command: /bin/sh\n"),
        &limits(),
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_names(&errors[0], "spec.job.driver", "--allowed-driver raw_exec");
    assert_names(
        &errors[1],
        "spec.job.driver.rawExec.command",
        "--allowed-command caddy=/bin/sh",
    );
}

#[test]
fn an_allowed_driver_still_refuses_a_command_not_listed() {
    let mut l = limits();
    l.drivers.insert(DriverKind::Exec);
    l.commands = vec![(ProxyKind::Traefik, "/usr/local/bin/traefik".to_owned())];
    let body = |c: &str| {
        format!("  proxy: traefik\n  job:\n    driver:\n      exec:\n        command: {c}\n")
    };
    let errors = admit(&spec(&body("/usr/bin/curl")), &l);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_names(
        &errors[0],
        "spec.job.driver.exec.command",
        "--allowed-command traefik=/usr/bin/curl",
    );
    // A star is literal for commands: no globbing of executables.
    l.commands = vec![(ProxyKind::Traefik, "/usr/*".to_owned())];
    assert_eq!(admit(&spec(&body("/usr/bin/curl")), &l).len(), 1);
    l.commands = vec![(ProxyKind::Traefik, "/usr/local/bin/traefik".to_owned())];
    assert_eq!(
        admit(&spec(&body("/usr/local/bin/traefik")), &l),
        Vec::new()
    );
}

#[test]
fn a_disallowed_host_volume_is_refused_and_an_empty_one_mounts_nothing() {
    let e = only_error("  proxy: traefik\n  job:\n    certVolume: root-fs\n");
    assert_names(&e, "spec.job.certVolume", "--allowed-host-volume root-fs");
    assert_eq!(
        admit(
            &spec("  proxy: traefik\n  job:\n    certVolume: \"\"\n"),
            &limits()
        ),
        Vec::new()
    );
}

#[test]
fn namespaces_and_node_pools_are_limited_unless_the_wildcard_is_given() {
    let body = "  proxy: traefik\n  job:\n    namespace: prod\n    nodePool: gpu\n";
    let errors = admit(&spec(body), &limits());
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_names(&errors[0], "spec.job.namespace", "--allowed-namespace prod");
    assert_names(&errors[1], "spec.job.nodePool", "--allowed-node-pool gpu");
    let mut l = limits();
    l.namespaces.insert(ANY.to_owned());
    l.node_pools.insert("gpu".to_owned());
    assert_eq!(admit(&spec(body), &l), Vec::new());
}

#[test]
fn cert_dir_etc_is_refused_and_names_allowed_cert_root() {
    let e = only_error("  proxy: traefik\n  tls:\n    certDir: /etc\n");
    assert_names(&e, "spec.tls.certDir", "--allowed-cert-root");
    assert_eq!(
        admit(
            &spec("  proxy: traefik\n  tls:\n    certDir: /pv/CERTS/site-a\n"),
            &limits()
        ),
        Vec::new(),
        "below the root is fine"
    );
}

#[test]
fn certificate_files_and_acme_storage_outside_the_roots_are_refused() {
    let errors = admit(
        &spec(
            "  proxy: traefik\n  tls:\n    certificates:\n      - certFile: /etc/ssl/a.pem\n        keyFile: /etc/shadow\n    acme:\n      email: a@example.com\n      storage: /etc/passwd\n",
        ),
        &limits(),
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.tls.certificates[0].certFile",
            "spec.tls.certificates[0].keyFile",
            "spec.tls.acme.storage"
        ]
    );
}

#[test]
fn path_tricks_do_not_escape_a_root() {
    let roots = [PathBuf::from("/pv/CERTS")];
    assert_eq!(outside(Path::new("/pv/CERTS/a/b.pem"), &roots), None);
    assert_eq!(outside(Path::new("/pv/CERTS"), &roots), None);
    assert_eq!(outside(Path::new("/pv/CERTS/./a"), &roots), None);
    assert!(outside(Path::new("/pv/CERTS/../../etc"), &roots).is_some());
    assert!(outside(Path::new("/pv/CERTS/a/../../../etc/shadow"), &roots).is_some());
    assert!(outside(Path::new("/pv/CERTSX"), &roots).is_some());
    assert!(outside(Path::new("/pv"), &roots).is_some());
    assert!(outside(Path::new("pv/CERTS/a"), &roots).is_some());
    // The document layer refuses the same trick before admission sees it.
    let doc = format!(
        "apiVersion: {}\nkind: {}\nspec:\n  tls:\n    certDir: /pv/CERTS/../../etc\n",
        spec::API_VERSION,
        spec::KIND
    );
    assert!(spec::load(doc.as_bytes()).is_err());
}

#[test]
fn every_violation_is_reported_at_once() {
    let errors = admit(
        &spec(
            "  proxy: traefik\n  tls:\n    certDir: /etc\n  job:\n    namespace: kube-system\n    certVolume: docker-sock\n    driver:\n      docker:\n        image: alpine\n  middlewares:\n    basicAuth:\n      usersFrom:\n        file: /etc/shadow\n",
        ),
        &limits(),
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    admission: AdmissionFlags,
}

#[test]
fn the_flags_default_to_the_default_limits() {
    let cli = Cli::try_parse_from(["x"]).unwrap();
    assert_eq!(cli.admission.limits("proxy-operator").unwrap(), limits());
}

#[test]
fn the_flags_build_limits_and_refuse_values_that_cannot_be_limits() {
    let cli = Cli::try_parse_from([
        "x",
        "--allowed-driver",
        "docker,raw_exec",
        "--allowed-command",
        "traefik=/opt/traefik",
        "--allowed-image",
        "caddy=caddy:2.*",
        "--allowed-cert-root",
        "/srv/certs",
        "--allowed-cert-root",
        "/pv/CERTS",
        "--secrets-prefix",
        "team/secrets",
        "--users-dir",
        "/srv/users",
    ])
    .unwrap();
    let l = cli.admission.limits("proxy-operator").unwrap();
    assert_eq!(
        l.drivers,
        BTreeSet::from([DriverKind::Docker, DriverKind::RawExec])
    );
    assert_eq!(
        l.commands,
        [(ProxyKind::Traefik, "/opt/traefik".to_owned())]
    );
    assert_eq!(l.images, [(ProxyKind::Caddy, "caddy:2.*".to_owned())]);
    assert_eq!(l.cert_roots.len(), 2);
    assert_eq!(l.secrets_prefix, "team/secrets/");
    assert_eq!(l.users_dir, Some(PathBuf::from("/srv/users")));

    assert!(Cli::try_parse_from(["x", "--allowed-image", "nginx=nginx"]).is_err());
    assert!(Cli::try_parse_from(["x", "--allowed-driver", "java"]).is_err());
    for (flag, value) in [
        ("--allowed-cert-root", "/"),
        ("--allowed-cert-root", "certs"),
        ("--users-dir", "/srv/../etc"),
        ("--secrets-prefix", "/abs/"),
    ] {
        let cli = Cli::try_parse_from(["x", flag, value]).unwrap();
        let err = cli.admission.limits("proxy-operator").unwrap_err();
        assert!(err.to_string().contains(flag), "{err}");
    }
}

#[tokio::test]
async fn a_users_file_symlinked_out_of_the_users_dir_is_refused_when_resolved() {
    let root = tempfile::tempdir().unwrap();
    let users = root.path().join("users");
    std::fs::create_dir(&users).unwrap();
    let secret = root.path().join("shadow");
    std::fs::write(&secret, "root:$6$x").unwrap();
    std::fs::write(users.join("htpasswd"), "u:$apr1$x").unwrap();
    std::os::unix::fs::symlink(&secret, users.join("link")).unwrap();
    let mut l = limits();
    l.users_dir = Some(users.clone());
    let ok = l
        .confine_users_file(users.join("htpasswd").to_str().unwrap())
        .await
        .unwrap();
    assert!(ok.ends_with("htpasswd"));
    let err = l
        .confine_users_file(users.join("link").to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(!err.is_retryable());
    assert!(
        !err.to_string().contains("root:$6$x"),
        "contents never reach errors"
    );
    let missing = l
        .confine_users_file(users.join("absent").to_str().unwrap())
        .await
        .unwrap_err();
    assert!(missing.is_retryable());
    l.users_dir = None;
    assert!(matches!(
        l.confine_users_file("/etc/shadow").await.unwrap_err(),
        Error::Refused(_)
    ));
}
