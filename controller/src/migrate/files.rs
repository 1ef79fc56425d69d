//! Job files: HCL edited in place, JSON rewritten.
