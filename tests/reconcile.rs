//! End-to-end: reconcile (twin + operator + real proxies).
