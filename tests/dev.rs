//! End-to-end: dev (twin + operator + real proxies).
