//! The typed layer over [`HttpClient`] that the Consul and Nomad clients share: failures name
//! the step and come back as the API's own error type.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::{Api, ClientConfig, Error, HttpClient, QueryMeta, Request, Response};

/// A request that failed at a named step: the `Request` variant of the Consul and Nomad
/// errors, in one place so both read "failed to `step`: `cause`" alike.
#[derive(Debug, thiserror::Error)]
#[error("failed to {op}: {source}")]
pub struct RequestFailed {
    /// The step that failed, e.g. `read KV key proxy-operator/config`.
    pub op: String,
    /// The cause.
    #[source]
    pub source: Box<Error>,
}

/// A request body that could not be encoded: the `Encode` variant of the Consul and Nomad
/// errors.
#[derive(Debug, thiserror::Error)]
#[error("failed to encode {what}: {source}")]
pub struct EncodeFailed {
    /// What was being encoded.
    pub what: &'static str,
    /// The cause.
    #[source]
    pub source: serde_json::Error,
}

/// How an API client's error type carries a failed request and an unencodable body, so the
/// Consul and Nomad clients share one [`ApiClient`] instead of each wrapping [`HttpClient`].
pub trait ClientError: From<RequestFailed> + From<EncodeFailed> {
    /// The API whose errors these are.
    const API: Api;

    /// The transport failure inside, when the error is one.
    fn transport(&self) -> Option<&Error>;

    /// A request that failed at step `op` (`read KV key x`).
    fn request(op: String, source: Error) -> Self {
        Self::from(RequestFailed {
            op,
            source: Box::new(source),
        })
    }

    /// True when the same call may succeed later (see [`Error::is_retryable`]); errors that
    /// are not transport failures (conflicts, validation) never are.
    fn transport_retryable(&self) -> bool {
        self.transport().is_some_and(Error::is_retryable)
    }

    /// True for 401/403.
    fn transport_forbidden(&self) -> bool {
        self.transport().is_some_and(Error::is_forbidden)
    }

    /// The HTTP status, when the server answered with an error.
    fn transport_status(&self) -> Option<u16> {
        self.transport().and_then(Error::status)
    }

    /// An error as the server would answer step `op` with `status`; for fakes and tests.
    fn answered(op: &str, status: u16, message: &str) -> Self {
        let source = Error::from_status(Self::API, "GET", "/v1/injected", status, message);
        Self::request(op.to_owned(), source)
    }
}

/// Implements [`ClientError`] for an API module's `Error` enum, which has the variants
/// `Request(#[from] RequestFailed)` and `Encode(#[from] EncodeFailed)`, and gives it the
/// classifiers both APIs answer alike (`is_retryable`, `status`, `injected`). What differs
/// (`is_forbidden`, `is_conflict`) each module writes itself.
macro_rules! impl_client_error {
    ($error:ident, $api:expr) => {
        impl $crate::transport::ClientError for $error {
            const API: $crate::transport::Api = $api;

            fn transport(&self) -> Option<&$crate::transport::Error> {
                match self {
                    $error::Request(failed) => Some(&failed.source),
                    _ => None,
                }
            }
        }

        impl $error {
            /// True when the same call may succeed later (network trouble, 429, transient
            /// 5xx). Conflicts, refusals and other 4xx are terminal.
            pub fn is_retryable(&self) -> bool {
                $crate::transport::ClientError::transport_retryable(self)
            }

            /// The HTTP status, when the server answered with an error.
            pub fn status(&self) -> Option<u16> {
                $crate::transport::ClientError::transport_status(self)
            }

            /// An error as the server would produce it with `status`; for fakes and tests.
            pub fn injected(op: &str, status: u16, message: &str) -> $error {
                <$error as $crate::transport::ClientError>::answered(op, status, message)
            }
        }
    };
}
pub(crate) use impl_client_error;

/// An [`HttpClient`] whose failures name the step and come back as the API's error `E`: the
/// one client type of both APIs (`consul::ConsulClient` and `nomad::NomadClient` are this
/// type with their error), built once from a [`ClientConfig`].
pub struct ApiClient<E> {
    http: HttpClient,
    error: PhantomData<fn() -> E>,
}

impl<E> Clone for ApiClient<E> {
    fn clone(&self) -> Self {
        ApiClient {
            http: self.http.clone(),
            error: PhantomData,
        }
    }
}

impl<E> fmt::Debug for ApiClient<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.http.fmt(f)
    }
}

impl<E: ClientError> ApiClient<E> {
    /// A client built from `config` (see [`HttpClient::new`], [`ClientConfig::consul_from_env`]
    /// and [`ClientConfig::nomad_from_env`]).
    pub fn new(config: &ClientConfig) -> Result<ApiClient<E>, Error> {
        Ok(ApiClient {
            http: HttpClient::new(config)?,
            error: PhantomData,
        })
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// [`HttpClient::send`], failing as step `op`.
    pub async fn send(&self, op: impl FnOnce() -> String, request: Request) -> Result<Response, E> {
        self.http
            .send(request)
            .await
            .map_err(|source| E::request(op(), source))
    }

    /// [`ApiClient::send`], then the JSON body decoded; the response is kept for its headers
    /// (index, leader).
    pub async fn json<T: DeserializeOwned>(
        &self,
        op: impl Fn() -> String,
        request: Request,
    ) -> Result<(T, Response), E> {
        let response = self.send(&op, request).await?;
        Ok((Self::decode(op, &response)?, response))
    }

    fn decode<T: DeserializeOwned>(
        op: impl FnOnce() -> String,
        response: &Response,
    ) -> Result<T, E> {
        response.json().map_err(|source| E::request(op(), source))
    }

    /// A read's decoded body with its index metadata (blocking reads and plain lists alike).
    pub async fn read<T: DeserializeOwned>(
        &self,
        op: impl Fn() -> String,
        request: Request,
    ) -> Result<(T, QueryMeta), E> {
        let (body, response) = self.json(op, request).await?;
        Ok((body, response.meta))
    }

    /// `GET /v1/status/leader`, which Consul and Nomad both serve: the Raft leader's address,
    /// `""` when there is none.
    pub async fn raft_leader(&self) -> Result<String, E> {
        self.json(
            || "read the Raft leader".to_owned(),
            Request::get("/v1/status/leader"),
        )
        .await
        .map(|(leader, _)| leader)
    }

    /// A read of something that may not exist: `None` on 404, the decoded body otherwise.
    pub async fn optional<T: DeserializeOwned>(
        &self,
        op: impl Fn() -> String,
        request: Request,
    ) -> Result<(Option<T>, QueryMeta), E> {
        let response = self.send(&op, request.accept(&[404])).await?;
        if response.status == 404 {
            return Ok((None, response.meta));
        }
        Ok((Some(Self::decode(op, &response)?), response.meta))
    }

    /// Sets `body` as the request's JSON body.
    pub fn encode<T: serde::Serialize + ?Sized>(
        what: &'static str,
        request: Request,
        body: &T,
    ) -> Result<Request, E> {
        request
            .json(body)
            .map_err(|source| E::from(EncodeFailed { what, source }))
    }
}
