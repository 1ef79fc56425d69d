# proxy-operator as a Nomad system job: one replica per node, one leader through the Consul
# lock at <prefix>/leader (followers serve /healthz and /metrics and wait).
#
# Run it (HinD: raw_exec is enabled and Consul/Nomad listen on the node):
#
#   nomad job run nomad-jobs/proxy-operator.nomad.hcl
#   nomad job run -var prefix=edge -var binary=/opt/bin/proxy-operator nomad-jobs/proxy-operator.nomad.hcl
#   nomad job run -var driver=docker -var image=registry.example/proxy-operator:0.1 nomad-jobs/proxy-operator.nomad.hcl
#
# With ACLs on, create the policies in nomad-jobs/acl/ first (README, "ACL policies"). Tokens
# never appear in this file: by default they come from Workload Identity (Nomad >= 1.7, with
# `nomad setup consul` done); set token_source to "vault" or "consul-kv" on older setups.

variable "prefix" {
  description = "Consul KV prefix of the ProxyConfig (<prefix>/config), status and leader key."
  type        = string
  default     = "proxy-operator"
}

variable "namespace" {
  description = "Nomad namespace of this job (the proxy job's namespace is in the ProxyConfig)."
  type        = string
  default     = "default"
}

variable "node_pool" {
  description = "Node pool the replicas run in."
  type        = string
  default     = "default"
}

variable "consul_addr" {
  description = "Consul HTTP API as seen from the task (CONSUL_HTTP_ADDR)."
  type        = string
  default     = "http://127.0.0.1:8500"
}

variable "nomad_addr" {
  description = "Nomad HTTP API as seen from the task (NOMAD_ADDR)."
  type        = string
  default     = "http://127.0.0.1:4646"
}

variable "driver" {
  description = "raw_exec (a binary on the node, HinD's default), docker or podman (an image)."
  type        = string
  default     = "raw_exec"

  validation {
    condition     = contains(["raw_exec", "docker", "podman"], var.driver)
    error_message = "The driver must be raw_exec, docker or podman."
  }
}

variable "binary" {
  description = "Path of the proxy-operator binary on every node (raw_exec)."
  type        = string
  default     = "/usr/local/bin/proxy-operator"
}

variable "image" {
  description = "proxy-operator image (docker/podman). This repository publishes none: build and push your own."
  type        = string
  default     = "localhost/proxy-operator:latest"
}

variable "http_port" {
  description = "Port of the operator's HTTP listener (/healthz, /readyz, /metrics) on each node."
  type        = number
  default     = 9090
}

variable "token_source" {
  description = "Where the Consul and Nomad tokens come from: identity (Workload Identity), vault, consul-kv, or none (ACLs off)."
  type        = string
  default     = "identity"

  validation {
    condition     = contains(["identity", "vault", "consul-kv", "none"], var.token_source)
    error_message = "The token_source must be identity, vault, consul-kv or none."
  }
}

variable "vault_secret" {
  description = "Vault KV v2 secret with consul_token and nomad_token fields (token_source = vault)."
  type        = string
  default     = "secret/data/proxy-operator"
}

variable "token_kv_prefix" {
  description = "Consul KV prefix holding consul_token and nomad_token (token_source = consul-kv); readable only by the Nomad clients' token."
  type        = string
  default     = "proxy-operator-bootstrap"
}

variable "extra_args" {
  description = "Extra flags of `proxy-operator run` (admission limits: --allowed-driver, --allowed-command, --users-dir, ...)."
  type        = list(string)
  default     = []
}

locals {
  args = concat([
    "run",
    "--prefix=${var.prefix}",
    # The node's address and the group's port: replicas on several nodes (or several twin nodes
    # on one machine) never share a listener, and the Consul check reaches it where it listens.
    "--http-addr=${NOMAD_ADDR_http}",
    "--log-format=json",
  ], var.extra_args)

  # Per token source, the template that writes the task's token variables.
  token_env = {
    # Workload Identity: Nomad writes the Consul token to secrets/consul_token.
    identity = {
      destination = "secrets/identity.env"
      data        = "CONSUL_HTTP_TOKEN_FILE={{ env \"NOMAD_SECRETS_DIR\" }}/consul_token\n"
    }
    vault = {
      destination = "secrets/tokens.env"
      data        = <<-EOT
      {{ with secret "${var.vault_secret}" }}
      CONSUL_HTTP_TOKEN={{ .Data.data.consul_token }}
      NOMAD_TOKEN={{ .Data.data.nomad_token }}
      {{ end }}
      EOT
    }
    consul-kv = {
      destination = "secrets/tokens.env"
      data        = <<-EOT
      CONSUL_HTTP_TOKEN={{ key "${var.token_kv_prefix}/consul_token" }}
      NOMAD_TOKEN={{ key "${var.token_kv_prefix}/nomad_token" }}
      EOT
    }
  }
}

job "proxy-operator" {
  type        = "system"
  namespace   = var.namespace
  node_pool   = var.node_pool
  datacenters = ["*"]

  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "2m"
  }

  group "operator" {
    network {
      port "http" {
        static = var.http_port
      }
    }

    restart {
      attempts = 10
      interval = "5m"
      delay    = "10s"
      mode     = "delay"
    }

    # The operator binds its leader session to this check (it finds it on the local Consul agent
    # by NOMAD_ALLOC_ID): when the check goes critical, Consul invalidates the session, so a
    # killed leader is replaced about one interval (plus --lock-delay) after it dies instead of
    # 1.5 to 2 x --leader-ttl. Hence the short interval; keep provider = "consul".
    service {
      name     = "proxy-operator"
      port     = "http"
      provider = "consul"
      tags     = ["proxy-operator"]

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "2s"
        timeout  = "1s"

        # About 30 s of failed checks before Nomad restarts the task, as before the interval
        # was shortened.
        check_restart {
          limit = 15
          grace = "30s"
        }
      }
    }

    task "operator" {
      driver = var.driver

      # SIGTERM releases the leader lock and destroys the session, so a follower takes over
      # within about a second; the grace below is longer than the operator's graceful
      # shutdown (10 s: cancel the pass, release the lock).
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      # `dynamic` generates the whole config block: Nomad does not expand dynamic blocks inside
      # a driver's config (hashicorp/nomad#15850), and the content uses var/local only, never
      # the iterator, which an opaque config would not resolve (hashicorp/nomad#10375).
      dynamic "config" {
        for_each = var.driver == "raw_exec" ? [1] : []
        content {
          command = var.binary
          args    = local.args
        }
      }

      dynamic "config" {
        for_each = var.driver == "raw_exec" ? [] : [1]
        content {
          image        = var.image
          args         = local.args
          network_mode = "host"
        }
      }

      env {
        CONSUL_HTTP_ADDR = var.consul_addr
        NOMAD_ADDR       = var.nomad_addr
        NOMAD_NAMESPACE  = var.namespace
      }

      # Workload Identity: NOMAD_TOKEN is the job's own identity (policies attached with
      # `nomad acl policy apply -job proxy-operator`), and Nomad logs in to Consul with the
      # consul_default identity and writes the Consul token to secrets/consul_token.
      dynamic "identity" {
        for_each = var.token_source == "identity" ? [1] : []
        content {
          env         = true
          change_mode = "restart"
        }
      }

      dynamic "identity" {
        for_each = var.token_source == "identity" ? [1] : []
        content {
          name = "consul_default"
          aud  = ["consul.io"]
          ttl  = "1h"
        }
      }

      dynamic "vault" {
        for_each = var.token_source == "vault" ? [1] : []
        content {
          change_mode = "restart"
        }
      }

      # The env file that hands the task its tokens (local.token_env); none without ACLs.
      dynamic "template" {
        for_each = var.token_source == "none" ? [] : [1]
        content {
          destination = local.token_env[var.token_source].destination
          env         = true
          change_mode = "restart"
          data        = local.token_env[var.token_source].data
        }
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
