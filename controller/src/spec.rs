//! The ProxyConfig document: types (serde + schemars), parsing (YAML/JSON) and validation.
