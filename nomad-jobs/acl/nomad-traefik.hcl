# Nomad ACL policy of the proxy's Traefik: its nomad provider lists and reads service
# registrations (/v1/services, /v1/service/:name) in the namespace it discovers.

namespace "default" {
  capabilities = ["read-job"]
}
