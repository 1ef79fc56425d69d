//! Pure renderers: a validated spec becomes the proxy's Nomad job, Traefik static and dynamic config, and Caddy config.
