# Minimal HinD-style job (after internetarchive/hind etc/hello-world.hcl).
variable "CI_PROJECT_PATH_SLUG" {
  type    = string
  default = "internetarchive-hello-js"
}

variable "BASE_DOMAIN" {
  default = "x.archive.org"
}

job "hello-world" {
  datacenters = ["dc1"]

  group "web" {
    network {
      port "http" {
        to = 5000
      }
    }

    # The site address HinD's Caddy serves.
    service {
      name = "hello-world"
      port = "http"
      tags = ["https://${var.CI_PROJECT_PATH_SLUG}-main.${var.BASE_DOMAIN}"]

      check {
        type     = "http"
        path     = "/"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "web" {
      driver = "podman"

      config {
        image = "registry.gitlab.com/internetarchive/hello-js:main"
        ports = ["http"]
      }

      service {
        name = "hello-world-admin"
        port = 8080
        tags = [
          "urlprefix-admin.example.com:443/", # the fabio-era HTTPS site
          "urlprefix-admin.example.com:80/ redirect=308,https://admin.example.com$path",
          "urlprefix-/internal allow=ip:10.0.0.0/8 strip=/internal", // private
          "metrics",
        ]
      }
    }
  }
}
