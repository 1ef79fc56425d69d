//! The reconcile loop: watch, observe, plan, roll out, report.
