# Consul ACL policy of the proxy's Traefik: its consulCatalog provider reads services and
# their health, its KV provider reads the tree the operator writes (<prefix>/traefik/).
# Nothing else: no writes, no other keys.

service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

key_prefix "proxy-operator/traefik/" {
  policy = "read"
}
