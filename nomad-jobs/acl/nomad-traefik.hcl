# Nomad ACL policy of the proxy's Traefik: its nomad provider lists and reads service
# registrations (/v1/services, /v1/service/:name) and, with `watch: true`, follows the event
# stream's Service topic, in the namespace it discovers. read-job covers all three.
#
# Traefik's nomad provider does not read NOMAD_TOKEN from its environment (its Consul providers
# do read CONSUL_HTTP_TOKEN): the token must be in the static config, providers.nomad.endpoint.token,
# rendered by the job's template (controller/tests/acl_traefik.rs shows both). Set the document's
# `spec.job.tokens` (workloadIdentity or nomadVariable) and the operator renders that template;
# with Workload Identity attach this policy with `nomad acl policy apply -job <proxy job id> ...`.

namespace "default" {
  capabilities = ["read-job"]
}
