//! End-to-end: migrate (twin + operator + real proxies).
