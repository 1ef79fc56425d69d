//! Pure planning: desired vs observed vs last status becomes a `Plan`.
