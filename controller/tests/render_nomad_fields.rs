//! The field guard: every key of every rendered job must be a field of Nomad's API types
//! (`fixtures/nomad-api-fields.json`). Real Nomad decodes job JSON case-insensitively and drops
//! unknown keys silently, so this test is the only thing that catches a misspelt field. Jobs
//! rendered from the example documents go through the same guard in `render_golden.rs`.
// Tests fail loudly: unwrap and panic are how they report.
#![allow(clippy::unwrap_used, clippy::panic)]

mod render_common;

use proxy_operator::render::{self, RenderContext};
use render_common::*;
use serde_json::{Value, json};

fn rendered_jobs() -> Vec<(String, Value)> {
    let ctx = RenderContext::default();
    let mut jobs = Vec::new();
    for (name, model) in [("traefik", traefik_model()), ("caddy", caddy_model())] {
        let rendered = render::render_model(&model, &ctx).expect("render");
        jobs.push((name.to_string(), rendered.job));
    }
    let mut docker = traefik_model();
    docker.job.driver = render::model::Driver::Docker {
        image: "traefik:v3.7.15".to_string(),
    };
    docker.job.system = false;
    jobs.push((
        "traefik-docker".to_string(),
        render::render_model(&docker, &ctx).expect("render").job,
    ));
    let mut exec = caddy_model();
    exec.job.driver = render::model::Driver::Exec {
        command: "caddy".to_string(),
        args: vec![],
    };
    jobs.push((
        "caddy-exec".to_string(),
        render::render_model(&exec, &ctx).expect("render").job,
    ));
    jobs
}

#[test]
fn every_rendered_job_key_is_a_field_of_nomads_api_types() {
    let api = nomad_api_types();
    for (name, job) in rendered_jobs() {
        let errors = check_against_nomad_api(&api, &job, "Job", "Job");
        assert!(
            errors.is_empty(),
            "{name}: job has keys Nomad would drop:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn field_guard_rejects_a_misspelt_job_field_like_datacenter() {
    let api = nomad_api_types();
    let (_, mut job) = rendered_jobs().remove(0);
    job["Datacenter"] = json!(["dc1"]);
    let errors = check_against_nomad_api(&api, &job, "Job", "Job");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("Job.Datacenter: no such field"),
        "{errors:?}"
    );
}

#[test]
fn field_guard_rejects_misspelt_and_wrongly_cased_nested_fields() {
    let api = nomad_api_types();
    let (_, mut job) = rendered_jobs().remove(0);
    job["TaskGroups"][0]["Tasks"][0]["Templates"][0]["Destination"] = json!("local/x");
    job["TaskGroups"][0]["Networks"][0]["ReservedPorts"][0]["value"] = json!(80);
    let errors = check_against_nomad_api(&api, &job, "Job", "Job");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Job.TaskGroups[0].Tasks[0].Templates[0].Destination:")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Job.TaskGroups[0].Networks[0].ReservedPorts[0].value:")),
        "{errors:?}"
    );
}

#[test]
fn field_guard_rejects_durations_that_are_not_integer_nanoseconds() {
    let api = nomad_api_types();
    let (_, mut job) = rendered_jobs().remove(0);
    job["Update"]["MinHealthyTime"] = json!("10s");
    let errors = check_against_nomad_api(&api, &job, "Job", "Job");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Job.Update.MinHealthyTime:")),
        "{errors:?}"
    );
}

#[test]
fn field_guard_accepts_hashicorps_own_register_example() {
    let api = nomad_api_types();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/nomad/job-register-request.json"
    );
    let body: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let errors = check_against_nomad_api(&api, &body, "JobRegisterRequest", "Body");
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn rendered_jobs_carry_no_tokens() {
    for (name, job) in rendered_jobs() {
        let text = job.to_string();
        for forbidden in [
            "ConsulToken",
            "VaultToken",
            "SecretID",
            "NOMAD_TOKEN",
            "CONSUL_HTTP_TOKEN",
        ] {
            assert!(
                !text.contains(forbidden),
                "{name}: job mentions {forbidden}"
            );
        }
    }
}
