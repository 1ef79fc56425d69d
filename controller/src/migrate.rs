//! Pure conversion of HinD `https://` and Fabio `urlprefix-` tags into Traefik tags.
