//! The Helm chart `helm/proxy-operator/`, without a `helm` binary: its templates are rendered
//! with a Go-template engine (gtmpl) and the five Sprig functions the chart uses (`quote`,
//! `default`, `toJson`, `trunc`, `trimSuffix`), for the default values and two other value sets;
//! the output must parse as Kubernetes manifests with the expected fields, and every value set
//! must pass `values.schema.json` (which Helm itself enforces on install).
#![allow(clippy::unwrap_used, clippy::panic)] // tests fail loudly

use std::collections::HashMap;
use std::path::PathBuf;

use gtmpl::{Context, Func, FuncError, Template, Value as Tmpl};
use serde_json::{Value, json};

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm/proxy-operator")
}

fn read(rel: &str) -> String {
    let p = chart_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

// === the Go-template side ===

fn to_tmpl(v: &Value) -> Tmpl {
    match v {
        Value::Null => Tmpl::Nil,
        Value::Bool(b) => Tmpl::from(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Tmpl::from(i),
            None => Tmpl::from(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Tmpl::from(s.clone()),
        Value::Array(items) => Tmpl::Array(items.iter().map(to_tmpl).collect()),
        Value::Object(map) => Tmpl::Map(
            map.iter()
                .map(|(k, v)| (k.clone(), to_tmpl(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

fn from_tmpl(v: &Tmpl) -> Value {
    match v {
        Tmpl::NoValue | Tmpl::Nil | Tmpl::Function(_) => Value::Null,
        Tmpl::Bool(b) => Value::Bool(*b),
        Tmpl::String(s) => Value::String(s.clone()),
        Tmpl::Number(n) => match n.as_i64() {
            Some(i) => json!(i),
            None => json!(n.as_f64()),
        },
        Tmpl::Array(items) => Value::Array(items.iter().map(from_tmpl).collect()),
        Tmpl::Object(map) | Tmpl::Map(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), from_tmpl(v))).collect())
        }
    }
}

fn string_arg(args: &[Tmpl], i: usize, name: &str) -> Result<String, FuncError> {
    match args.get(i) {
        Some(Tmpl::String(s)) => Ok(s.clone()),
        Some(Tmpl::Number(n)) => Ok(n.to_string()),
        _ => Err(FuncError::Generic(format!(
            "{name}: argument {i} is not a string"
        ))),
    }
}

/// Sprig `quote`: a double-quoted string (Go `%q`; JSON escaping is the same for this chart).
fn quote(args: &[Tmpl]) -> Result<Tmpl, FuncError> {
    let s = match args.first() {
        Some(Tmpl::NoValue | Tmpl::Nil) | None => String::new(),
        Some(other) => from_tmpl(other)
            .as_str()
            .map_or_else(|| from_tmpl(other).to_string(), str::to_owned),
    };
    Ok(Tmpl::from(serde_json::to_string(&s).unwrap()))
}

/// Sprig `default DEFAULT GIVEN`: GIVEN unless it is empty.
fn default(args: &[Tmpl]) -> Result<Tmpl, FuncError> {
    let fallback = args
        .first()
        .cloned()
        .ok_or_else(|| FuncError::AtLeastXArgs("default".into(), 1))?;
    match args.get(1) {
        Some(given) if truthy(given) => Ok(given.clone()),
        _ => Ok(fallback),
    }
}

fn truthy(v: &Tmpl) -> bool {
    match v {
        Tmpl::Bool(b) => *b,
        Tmpl::String(s) => !s.is_empty(),
        Tmpl::Array(a) => !a.is_empty(),
        Tmpl::Object(o) | Tmpl::Map(o) => !o.is_empty(),
        Tmpl::Number(n) => n.as_f64() != Some(0.0),
        Tmpl::Function(_) => true,
        Tmpl::NoValue | Tmpl::Nil => false,
    }
}

/// Sprig `toJson`: compact JSON, which YAML reads as a flow collection.
fn to_json(args: &[Tmpl]) -> Result<Tmpl, FuncError> {
    let v = args
        .first()
        .ok_or_else(|| FuncError::ExactlyXArgs("toJson".into(), 1))?;
    Ok(Tmpl::from(from_tmpl(v).to_string()))
}

/// Sprig `trunc N S`.
fn trunc(args: &[Tmpl]) -> Result<Tmpl, FuncError> {
    let n = match args.first() {
        Some(Tmpl::Number(n)) => n.as_u64().unwrap_or(0) as usize,
        _ => return Err(FuncError::Generic("trunc: length is not a number".into())),
    };
    let s = string_arg(args, 1, "trunc")?;
    Ok(Tmpl::from(s.chars().take(n).collect::<String>()))
}

/// Sprig `trimSuffix SUFFIX S`.
fn trim_suffix(args: &[Tmpl]) -> Result<Tmpl, FuncError> {
    let suffix = string_arg(args, 0, "trimSuffix")?;
    let s = string_arg(args, 1, "trimSuffix")?;
    Ok(Tmpl::from(
        s.strip_suffix(suffix.as_str()).unwrap_or(&s).to_owned(),
    ))
}

/// Deep merge, as Helm merges `--values` over the chart's values.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn values(overrides: &Value) -> Value {
    let mut v = yaml(&read("values.yaml"));
    merge(&mut v, overrides);
    v
}

/// Renders every template (not `_*.tpl`) with `values`, as `helm template` would, and returns
/// the manifests (empty documents dropped).
fn render(values: &Value) -> Vec<Value> {
    let chart = yaml(&read("Chart.yaml"));
    let root = json!({
        "Values": values,
        "Release": {"Name": "edge", "Namespace": "ops", "Service": "Helm"},
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart["appVersion"],
        },
    });
    let funcs: [(&str, Func); 5] = [
        ("quote", quote),
        ("default", default),
        ("toJson", to_json),
        ("trunc", trunc),
        ("trimSuffix", trim_suffix),
    ];
    let mut names: Vec<_> = std::fs::read_dir(chart_dir().join("templates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('_'))
        .collect();
    names.sort();
    let mut manifests = Vec::new();
    for name in names {
        let mut t = Template::with_name(name.clone());
        t.add_funcs(&funcs);
        t.add_template("_helpers.tpl", read("templates/_helpers.tpl"))
            .unwrap();
        t.parse(read(&format!("templates/{name}")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = t
            .render(&Context::from(to_tmpl(&root)))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for doc in out.split("\n---") {
            if doc.trim().is_empty() {
                continue;
            }
            let manifest = yaml(doc);
            if !manifest.is_null() {
                manifests.push(manifest);
            }
        }
    }
    manifests
}

fn kind<'a>(manifests: &'a [Value], kind: &str) -> Option<&'a Value> {
    let found: Vec<_> = manifests.iter().filter(|m| m["kind"] == kind).collect();
    assert!(found.len() <= 1, "two {kind}s");
    found.first().copied()
}

/// What the API server would refuse outright: missing type or name, names that are not DNS
/// labels, labels that are not strings.
fn assert_kubernetes_shape(manifests: &[Value]) {
    for m in manifests {
        assert!(m["apiVersion"].is_string(), "{m}");
        assert!(m["kind"].is_string(), "{m}");
        let name = m["metadata"]["name"].as_str().unwrap();
        assert!(
            name.len() <= 63
                && !name.starts_with('-')
                && !name.ends_with('-')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name:?} is not a DNS label"
        );
        if let Some(labels) = m["metadata"]["labels"].as_object() {
            for (k, v) in labels {
                assert!(v.is_string(), "label {k} is {v}");
            }
        }
    }
}

fn container(manifests: &[Value]) -> &Value {
    &kind(manifests, "Deployment").unwrap()["spec"]["template"]["spec"]["containers"][0]
}

fn args(manifests: &[Value]) -> Vec<&str> {
    container(manifests)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn env<'a>(manifests: &'a [Value], name: &str) -> Option<&'a Value> {
    container(manifests)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
}

// === the schema side ===

fn schema_errors(values: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(&read("values.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(values)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn with_monitoring() -> Value {
    json!({
        "replicaCount": 3,
        "image": {"tag": "0.2.0"},
        "prefix": "edge/prod",
        "serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "kube-prometheus"}},
        "admission": {
            "allowedDrivers": ["docker", "raw_exec"],
            "allowedCommands": ["traefik=/usr/local/bin/traefik"],
            "secretsPrefix": "edge/secrets/"
        },
        "extraArgs": ["--debounce=500ms"],
        "consul": {"caSecret": "consul-ca"},
    })
}

fn external_account() -> Value {
    json!({
        "fullnameOverride": "edge-operator",
        "serviceAccount": {"create": false, "name": "platform-operators"},
        "tokens": {"existingSecret": "hashi-tokens", "consulKey": "consul", "nomadKey": "nomad"},
        "nomad": {"address": "https://nomad.internal:4646", "region": "eu", "namespace": "edge"},
        "logFormat": "text",
        "nodeSelector": {"kubernetes.io/os": "linux"},
    })
}

#[test]
fn the_default_values_render_a_two_replica_deployment_with_probes_and_secret_tokens() {
    let v = values(&json!({}));
    assert_eq!(schema_errors(&v), Vec::<String>::new());
    let m = render(&v);
    assert_kubernetes_shape(&m);
    let kinds: Vec<&str> = m.iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Deployment", "Service", "ServiceAccount"]);

    let d = kind(&m, "Deployment").unwrap();
    assert_eq!(d["metadata"]["name"], "edge-proxy-operator");
    assert_eq!(d["spec"]["replicas"], 2);
    let selector = &d["spec"]["selector"]["matchLabels"];
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the selector matches the pod's labels");
    }
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "edge-proxy-operator");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 10);

    let c = container(&m);
    assert_eq!(c["image"], "registry.example.com/proxy-operator:0.1.0");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    let a = args(&m);
    assert_eq!(a[0], "run");
    for expected in [
        "--prefix=proxy-operator",
        "--http-addr=0.0.0.0:9090",
        "--log-format=json",
        "--leader-ttl=15s",
        "--lock-delay=1s",
        "--instance-id=$(POD_NAME)",
        "--session-check=none",
    ] {
        assert!(a.contains(&expected), "{expected} missing from {a:?}");
    }
    assert!(!a.iter().any(|x| x.starts_with("--allowed-")), "{a:?}");
    for (var, key) in [
        ("CONSUL_HTTP_TOKEN", "consul-token"),
        ("NOMAD_TOKEN", "nomad-token"),
    ] {
        let e = env(&m, var).unwrap();
        assert!(e.get("value").is_none(), "{var} must not be a literal");
        assert_eq!(
            e["valueFrom"]["secretKeyRef"],
            json!({"name": "proxy-operator-tokens", "key": key})
        );
    }
    assert_eq!(
        env(&m, "CONSUL_HTTP_ADDR").unwrap()["value"],
        "http://consul.example.com:8500"
    );
    assert!(env(&m, "NOMAD_REGION").is_none());

    let svc = kind(&m, "Service").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"], 9090);
    assert_eq!(svc["spec"]["selector"], *selector);
    let sa = kind(&m, "ServiceAccount").unwrap();
    assert_eq!(sa["automountServiceAccountToken"], false);
}

#[test]
fn monitoring_values_add_a_service_monitor_admission_flags_and_a_ca_mount() {
    let v = values(&with_monitoring());
    assert_eq!(schema_errors(&v), Vec::<String>::new());
    let m = render(&v);
    assert_kubernetes_shape(&m);
    let d = kind(&m, "Deployment").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        container(&m)["image"],
        "registry.example.com/proxy-operator:0.2.0"
    );
    let a = args(&m);
    for expected in [
        "--prefix=edge/prod",
        "--allowed-driver=docker",
        "--allowed-driver=raw_exec",
        "--allowed-command=traefik=/usr/local/bin/traefik",
        "--secrets-prefix=edge/secrets/",
    ] {
        assert!(a.contains(&expected), "{expected} missing from {a:?}");
    }
    assert_eq!(a.last(), Some(&"--debounce=500ms"));
    assert_eq!(
        env(&m, "CONSUL_CACERT").unwrap()["value"],
        "/etc/proxy-operator/consul-ca/ca.crt"
    );
    let volumes = &d["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "consul-ca")
    );
    let sm = kind(&m, "ServiceMonitor").unwrap();
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus");
    assert_eq!(
        sm["metadata"]["labels"]["app.kubernetes.io/name"],
        "proxy-operator"
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "15s");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        kind(&m, "Service").unwrap()["spec"]["selector"]
    );
}

#[test]
fn an_external_service_account_and_secret_are_referenced_not_created() {
    let v = values(&external_account());
    assert_eq!(schema_errors(&v), Vec::<String>::new());
    let m = render(&v);
    assert_kubernetes_shape(&m);
    assert!(kind(&m, "ServiceAccount").is_none());
    let d = kind(&m, "Deployment").unwrap();
    assert_eq!(d["metadata"]["name"], "edge-operator");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "platform-operators");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(
        env(&m, "NOMAD_TOKEN").unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "hashi-tokens", "key": "nomad"})
    );
    assert_eq!(env(&m, "NOMAD_REGION").unwrap()["value"], "eu");
    assert_eq!(env(&m, "NOMAD_NAMESPACE").unwrap()["value"], "edge");
    assert!(args(&m).contains(&"--log-format=text"));
}

#[test]
fn a_long_release_name_is_cut_to_a_dns_label() {
    assert_eq!(
        trunc(&[Tmpl::from(63u64), Tmpl::from("a".repeat(70))]).unwrap(),
        Tmpl::from("a".repeat(63))
    );
    assert_eq!(
        trim_suffix(&[Tmpl::from("-"), Tmpl::from("abc-")]).unwrap(),
        Tmpl::from("abc")
    );
}

#[test]
fn the_schema_refuses_typos_wrong_types_literal_tokens_and_a_short_grace_period() {
    for (bad, why) in [
        (json!({"replicas": 2}), "unknown key"),
        (json!({"replicaCount": "two"}), "wrong type"),
        (json!({"replicaCount": 0}), "no replica"),
        (
            json!({"tokens": {"consulToken": "s3cr3t"}}),
            "a literal token",
        ),
        (json!({"prefix": "/proxy-operator"}), "leading slash"),
        (json!({"prefix": "a/../b"}), "dot-dot segment"),
        (json!({"consul": {"address": "consul:8500"}}), "no scheme"),
        (
            json!({"admission": {"allowedDrivers": ["java"]}}),
            "unknown driver",
        ),
        (
            json!({"admission": {"allowedImages": ["nginx=nginx"]}}),
            "unknown proxy",
        ),
        (json!({"leader": {"ttl": "15"}}), "duration without unit"),
        (
            json!({"terminationGracePeriodSeconds": 5}),
            "shorter than graceful shutdown",
        ),
        (
            json!({"serviceMonitor": {"enabled": "yes"}}),
            "not a boolean",
        ),
    ] {
        assert!(
            !schema_errors(&values(&bad)).is_empty(),
            "{why}: {bad} passed the schema"
        );
    }
}
