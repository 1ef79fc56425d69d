# Nomad ACL policy of proxy-operator: submit and read the proxy's job in its namespace (the
# ProxyConfig's spec.job.namespace, "default" unless changed) and read nodes for the health gate.
#
# With Workload Identity, attach it to the operator's job instead of minting a token:
#   nomad acl policy apply -namespace default -job proxy-operator proxy-operator nomad-jobs/acl/nomad-operator.hcl

# Nomad checks submit-job against the job's own Namespace when the request names none, so the
# label below must be the ProxyConfig's spec.job.namespace.
namespace "default" {
  # submit-job: register (with EnforceIndex), revert (EnforcePriorVersion), plan, stop.
  # read-job: jobs, versions, allocations, deployments, evaluations, services, event stream.
  capabilities = ["list-jobs", "read-job", "submit-job"]
}

node {
  policy = "read"
}
