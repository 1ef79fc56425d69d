//! The operator's own job file (`nomad-jobs/proxy-operator.nomad.hcl`) read the way `nomad job
//! run` reads it: HCL2 evaluated with variable defaults and `-var` overrides, validations, locals
//! and `dynamic` blocks (hcl-rs), then converted to the JSON job the HTTP API takes, as the CLI's
//! jobspec2 parser does before it calls `PUT /v1/jobs`.
//!
//! Runtime interpolations (`${NOMAD_ADDR_http}`) are not HCL variables: jobspec2 evaluates with
//! an `UnknownVariable` hook that leaves them as `${...}` for the client to fill in when the task
//! starts, and so does this reader. The JSON conversion covers the blocks the file uses; a block
//! it does not know is an error naming it, never dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Block, Body, Structure, Value};
use serde_json::{Map, Value as Json, json};

/// A file of this repository, by path from the root.
pub fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn concat(args: FuncArgs) -> Result<Value, String> {
    let mut out = Vec::new();
    for v in args.into_values() {
        match v {
            Value::Array(items) => out.extend(items),
            other => return Err(format!("concat: {other:?} is not a list")),
        }
    }
    Ok(Value::Array(out))
}

fn contains(args: FuncArgs) -> Result<Value, String> {
    let values = args.into_values();
    match values.as_slice() {
        [Value::Array(list), needle] => Ok(Value::Bool(list.contains(needle))),
        _ => Err("contains(list, value)".to_owned()),
    }
}

fn functions(ctx: &mut Context) {
    ctx.declare_func(
        "concat",
        FuncDef::builder()
            .variadic_param(ParamType::array_of(ParamType::Any))
            .build(concat),
    );
    ctx.declare_func(
        "contains",
        FuncDef::builder()
            .param(ParamType::array_of(ParamType::Any))
            .param(ParamType::Any)
            .build(contains),
    );
}

/// The first label of a block (`job "x"` → `x`).
pub fn label(block: &Block) -> &str {
    block.labels().first().map_or("", |l| l.as_str())
}

/// Names of the `${NOMAD_*}` runtime variables the file uses.
fn runtime_variables(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("${NOMAD_")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            (rest.as_bytes().get(end) == Some(&b'}')).then(|| rest[..end].to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The job of the file at `path`, evaluated with `overrides` on top of the variable defaults;
/// errors name the failed variable validation, as `nomad job run -var` would.
pub fn evaluate_job_file(path: &str, overrides: &[(&str, Value)]) -> Result<Block, String> {
    let text = repo_file(path);
    let body: Body = hcl::parse(&text).unwrap();
    let mut base = Context::new();
    functions(&mut base);
    for name in runtime_variables(&text) {
        let literal = format!("${{{name}}}");
        base.declare_var(name, Value::from(literal));
    }
    let mut vars = hcl::Map::new();
    let mut validations = Vec::new();
    for block in body.blocks().filter(|b| b.identifier() == "variable") {
        let name = label(block).to_owned();
        let default = block
            .body()
            .attributes()
            .find(|a| a.key() == "default")
            .unwrap_or_else(|| panic!("variable {name} has no default: the job must run as is"));
        let mut value = default.expr().evaluate(&base).unwrap();
        if let Some((_, v)) = overrides.iter().find(|(k, _)| *k == name) {
            value = v.clone();
        }
        vars.insert(name.clone(), value);
        for v in block
            .body()
            .blocks()
            .filter(|b| b.identifier() == "validation")
        {
            validations.push((name.clone(), v.body().clone()));
        }
    }
    for (name, _) in overrides {
        assert!(vars.contains_key(*name), "no variable {name}");
    }
    let mut ctx = base.clone();
    ctx.declare_var("var", Value::Object(vars));
    for (name, v) in validations {
        let cond = v.attributes().find(|a| a.key() == "condition").unwrap();
        if cond.expr().evaluate(&ctx).unwrap() != Value::Bool(true) {
            return Err(format!("variable {name} failed its validation"));
        }
    }
    let mut locals = hcl::Map::new();
    for block in body.blocks().filter(|b| b.identifier() == "locals") {
        for a in block.body().attributes() {
            locals.insert(a.key().to_owned(), a.expr().evaluate(&ctx).unwrap());
        }
    }
    ctx.declare_var("local", Value::Object(locals));
    let job = body
        .blocks()
        .find(|b| b.identifier() == "job")
        .expect("a job block");
    let expanded = Block::builder(job.identifier())
        .add_labels(job.labels().iter().cloned())
        .add_structures(expand(job.body(), &ctx))
        .build();
    expanded.evaluate(&ctx).map_err(|e| e.to_string())
}

/// The operator's job file, evaluated (see [`evaluate_job_file`]).
pub fn evaluate_job(overrides: &[(&str, Value)]) -> Result<Block, String> {
    evaluate_job_file("nomad-jobs/proxy-operator.nomad.hcl", overrides)
}

/// Expands `dynamic "x" { for_each = ...; content { ... } }` into one `x` block per element.
fn expand(body: &Body, ctx: &Context) -> Vec<Structure> {
    let mut out = Vec::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => out.push(Structure::Attribute(a.clone())),
            Structure::Block(b) if b.identifier() == "dynamic" => {
                let for_each = b
                    .body()
                    .attributes()
                    .find(|a| a.key() == "for_each")
                    .unwrap();
                let Value::Array(items) = for_each.expr().evaluate(ctx).unwrap() else {
                    panic!("for_each of dynamic {} is not a list", label(b));
                };
                let content = b
                    .body()
                    .blocks()
                    .find(|c| c.identifier() == "content")
                    .unwrap();
                for _ in items {
                    out.push(Structure::Block(
                        Block::builder(label(b))
                            .add_structures(expand(content.body(), ctx))
                            .build(),
                    ));
                }
            }
            Structure::Block(b) => out.push(Structure::Block(
                Block::builder(b.identifier())
                    .add_labels(b.labels().iter().cloned())
                    .add_structures(expand(b.body(), ctx))
                    .build(),
            )),
        }
    }
    out
}

/// Attributes whose HCL value is a duration string and whose API value is nanoseconds.
const DURATIONS: &[&str] = &[
    "min_healthy_time",
    "healthy_deadline",
    "progress_deadline",
    "interval",
    "delay",
    "timeout",
    "grace",
    "kill_timeout",
    "shutdown_delay",
    "ttl",
];

/// Block name → (API field, whether the API holds a list of them).
fn block_field(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        "group" => ("TaskGroups", true),
        "task" => ("Tasks", true),
        "network" => ("Networks", true),
        "service" => ("Services", true),
        "check" => ("Checks", true),
        "template" => ("Templates", true),
        "identity" => ("Identities", true),
        "update" => ("Update", false),
        "restart" => ("RestartPolicy", false),
        "check_restart" => ("CheckRestart", false),
        "resources" => ("Resources", false),
        "vault" => ("Vault", false),
        _ => return None,
    })
}

/// Attribute name → API field, where it is not the plain PascalCase of the name.
fn attribute_field(block: &str, name: &str) -> String {
    match (block, name) {
        ("service", "port") => "PortLabel".into(),
        ("resources", "memory") => "MemoryMB".into(),
        ("resources", "cpu") => "CPU".into(),
        ("template", "destination") => "DestPath".into(),
        ("template", "data") => "EmbeddedTmpl".into(),
        ("template", "env") => "Envvar".into(),
        (_, other) => other
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect(),
    }
}

fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap()
}

fn nanos(text: &str) -> Json {
    let d = proxy_operator::spec::parse_duration(text)
        .unwrap_or_else(|e| panic!("duration {text:?}: {e}"));
    json!(u64::try_from(d.as_nanos()).unwrap())
}

/// One block as its API object.
fn object(block: &Block) -> Json {
    let kind = block.identifier();
    let mut out = Map::new();
    if let Some(name) = block.labels().first() {
        out.insert("Name".into(), json!(name.as_str()));
    }
    for a in block.body().attributes() {
        let value = match (a.key(), Value::from(a.expr().clone())) {
            (k, Value::String(s)) if DURATIONS.contains(&k) => nanos(&s),
            (_, v) => to_json(&v),
        };
        out.insert(attribute_field(kind, a.key()), value);
    }
    for b in block.body().blocks() {
        match b.identifier() {
            // Driver config and env are maps the driver and task read verbatim.
            "config" => {
                out.insert("Config".into(), verbatim(b));
            }
            "env" => {
                out.insert("Env".into(), verbatim(b));
            }
            "port" => {
                let value = b
                    .body()
                    .attributes()
                    .find(|a| a.key() == "static")
                    .map(|a| to_json(&Value::from(a.expr().clone())));
                let port = json!({"Label": label(b), "Value": value.clone().unwrap_or(json!(0))});
                let list = match value.and_then(|v| v.as_u64()) {
                    Some(n) if n > 0 => "ReservedPorts",
                    _ => "DynamicPorts",
                };
                push(&mut out, list, port);
            }
            // The default identity is one object; named ones are a list.
            "identity" if !b.body().attributes().any(|a| a.key() == "name") => {
                out.insert("Identity".into(), object(b));
            }
            other => {
                let Some((field, many)) = block_field(other) else {
                    panic!("block {other:?} in {kind:?}: not converted to API JSON");
                };
                if many {
                    push(&mut out, field, object(b));
                } else {
                    out.insert(field.into(), object(b));
                }
            }
        }
    }
    Json::Object(out)
}

fn verbatim(block: &Block) -> Json {
    let map: Map<String, Json> = block
        .body()
        .attributes()
        .map(|a| (a.key().to_owned(), to_json(&Value::from(a.expr().clone()))))
        .collect();
    Json::Object(map)
}

fn push(out: &mut Map<String, Json>, field: &str, item: Json) {
    match out.entry(field.to_owned()).or_insert_with(|| json!([])) {
        Json::Array(items) => items.push(item),
        other => panic!("{field} is {other:?}"),
    }
}

/// The evaluated job as the JSON body of `PUT /v1/jobs` (`{"Job": ...}`).
pub fn api_job(job: &Block) -> Json {
    let mut j = object(job);
    let id = label(job).to_owned();
    if let Json::Object(m) = &mut j {
        m.insert("ID".into(), json!(id));
        m.insert("Name".into(), json!(id));
    }
    json!({ "Job": j })
}
