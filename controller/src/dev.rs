//! `proxy-operator dev`: the twin, a demo backend, real Traefik as a job and the operator, all on loopback.
