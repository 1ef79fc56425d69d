//! Shared helpers of the Consul contract tests: a small HTTP client for the twin's Consul API.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use hashistack_twin::{Twin, TwinConfig};
use reqwest::StatusCode;
use serde_json::Value;

/// A sample payload of HashiCorp's docs from `fixtures/consul/`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/../fixtures/consul/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// A running twin and a client for its Consul API.
pub struct Api {
    pub twin: Twin,
    pub http: reqwest::Client,
    /// Sent as `X-Consul-Token` when set.
    pub token: Option<String>,
}

/// One answer: status, headers, body text.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answered {} non-JSON {:?}: {e}", self.status, self.text))
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// `X-Consul-Index`.
    pub fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .expect("X-Consul-Index header")
            .parse()
            .unwrap()
    }
}

impl Api {
    pub async fn start() -> Api {
        Api::with(TwinConfig::default()).await
    }

    pub async fn with(config: TwinConfig) -> Api {
        let twin = Twin::start(config).await.unwrap();
        Api {
            twin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            token: None,
        }
    }

    /// The same twin seen with another token.
    pub fn as_token(&self, token: &str) -> Client<'_> {
        Client {
            api: self,
            token: Some(token.to_string()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.twin.consul_addr())
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
        self.send(self.token.as_deref(), method, path, body).await
    }

    pub async fn send(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        let resp = req.send().await.unwrap();
        Answer {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    /// A JSON request and its JSON answer.
    pub async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        let a = self
            .call(method, path, body.as_deref().map(str::as_bytes))
            .await;
        (a.status, a.json())
    }

    /// Creates a session from `body` and returns its ID.
    pub async fn session(&self, body: Value) -> String {
        let (s, v) = self.json("PUT", "/v1/session/create", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["ID"].as_str().unwrap().to_string()
    }

    /// `PUT /v1/kv/<key>?<op>=<session>` and the `true`/`false` answer.
    pub async fn lock(&self, op: &str, key: &str, session: &str) -> bool {
        let a = self
            .call("PUT", &format!("/v1/kv/{key}?{op}={session}"), Some(b"v"))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.json().as_bool().unwrap()
    }
}

/// The twin seen with a given token.
pub struct Client<'a> {
    api: &'a Api,
    token: Option<String>,
}

impl Client<'_> {
    pub async fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
        self.api
            .send(self.token.as_deref(), method, path, body)
            .await
    }

    pub async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        let a = self
            .call(method, path, body.as_deref().map(str::as_bytes))
            .await;
        (a.status, a.json())
    }
}
