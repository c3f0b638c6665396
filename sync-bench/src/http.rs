//! The HTTP client every workload shares: hyper's pooled keep-alive client over plain TCP.
//!
//! Requests are built from a [`Prepared`] (method, path, extra headers, body bytes made
//! before the clock starts), so sending one costs a header map and a `Bytes` clone.

use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A request made ahead of time.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// GET, POST, PUT or DELETE.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Headers besides `Authorization` and `Content-Type`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body (empty for GET).
    pub body: Bytes,
}

impl Prepared {
    /// A GET of `path`.
    pub fn get(path: String) -> Prepared {
        Prepared {
            method: Method::GET,
            path,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// A whole answer: the body is read to its last byte.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, complete.
    pub body: Bytes,
}

impl Reply {
    /// The body as text, for error messages (cut to 500 bytes).
    pub fn body_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(500).collect()
    }

    /// A header as a string, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A keep-alive client for one server and one user.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    auth: HeaderValue,
    timeout: Duration,
}

impl Http {
    /// A client for `base` (`http://host:port`, no trailing slash) sending `auth` as the
    /// `Authorization` header. Any request slower than `timeout` fails.
    pub fn new(base: &str, auth: HeaderValue, timeout: Duration) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            // Every concurrent client keeps its own connection open between requests.
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(120))
            .build(connector);
        Http {
            client,
            base: base.trim_end_matches('/').to_string(),
            auth,
            timeout,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&self, request: &Prepared) -> anyhow::Result<Reply> {
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(format!("{}{}", self.base, request.path))
            .header(AUTHORIZATION, self.auth.clone());
        if !request.body.is_empty() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let req = builder
            .body(Full::new(request.body.clone()))
            .context("building a request")?;
        let exchange = async {
            let response = self.client.request(req).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(reply) => reply.with_context(|| format!("{} {}", request.method, request.path)),
            Err(_) => Err(anyhow!(
                "{} {}: no answer within {:?}",
                request.method,
                request.path,
                self.timeout
            )),
        }
    }

    /// Sends `request` and fails unless the status is 2xx.
    pub async fn send_ok(&self, request: &Prepared) -> anyhow::Result<Reply> {
        let reply = self.send(request).await?;
        if !reply.status.is_success() {
            return Err(anyhow!(
                "{} {} answered {}: {}",
                request.method,
                request.path,
                reply.status,
                reply.body_excerpt()
            ));
        }
        Ok(reply)
    }
}
