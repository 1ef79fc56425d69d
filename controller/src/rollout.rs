//! The health-gated rollout state machine: `step(phase, observation, now) -> (effects, phase)`.
