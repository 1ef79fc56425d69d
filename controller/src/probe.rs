//! Proxy health: Traefik `/ping` and `/api/rawdata`, Caddy admin, route probes.
