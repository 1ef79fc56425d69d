# Consul ACL policy of proxy-operator (default prefix "proxy-operator"; for another prefix,
# replace it everywhere, e.g. `sed 's#proxy-operator/#edge/#g'`).
#
# `key` rules match one key exactly; `key_prefix` rules match every key that starts with the
# string, so each prefix below ends with "/" to stay inside its tree.

# The desired document: read only. Whoever may write it chooses the proxy, so it is not ours.
key "proxy-operator/config" {
  policy = "read"
}

# What the operator writes, every write fenced by a check-session on the leader key.
key "proxy-operator/status" {
  policy = "write"
}

key "proxy-operator/rollout" {
  policy = "write"
}

key "proxy-operator/leader" {
  policy = "write"
}

key_prefix "proxy-operator/traefik/" {
  policy = "write"
}

key_prefix "proxy-operator/revisions/" {
  policy = "write"
}

# Basic-auth user lists referenced by usersFrom.consulKey (--secrets-prefix): read only.
key_prefix "proxy-operator/secrets/" {
  policy = "read"
}

# The leader session is created on the local agent's node (/v1/agent/self). One policy serves
# every replica of the system job, so it cannot name the node: this allows sessions on any
# registered node. It grants no key: a session only locks keys the rules above let it write.
# For one policy per node, replace the rule with `session "<node>" { policy = "write" }`
# (controller/tests/acl_operator.rs proves both).
session_prefix "" {
  policy = "write"
}

# /v1/agent/self names the node the session is created on.
agent_prefix "" {
  policy = "read"
}

# Catalog and health reads: Caddy's routes come from the service catalog, and the health gate
# reads the proxy's checks (health endpoints need node and service read).
#
# The leader session is bound to the operator's own health check (the job's "proxy-operator"
# service), so a killed leader loses the lock about one check interval after it dies. Finding
# the check reads GET /v1/agent/checks, which Consul filters (never refuses) per check:
# service:read on the check's service, node:read on the agent's node for node checks (SRC
# agent/agent.go filterChecksWithAuthorizer). Binding it needs nothing beyond the session rule
# above (Session.Apply checks only session:write on the node). If you narrow the rule below,
# keep `service "proxy-operator" { policy = "read" }`, or the session is TTL-only and a killed
# leader is replaced only after 1.5 to 2 x --leader-ttl (the operator logs a warning).
service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
