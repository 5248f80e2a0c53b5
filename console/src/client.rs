//! A thin blocking client for the coordinator's control API (docs/API.md).

use crate::error::{ApiError, usage};
use anyhow::Result;
use dyno_shared::api::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{BufReader, Read};
use std::time::Duration;

pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7070";

pub struct Client {
    base: String,
    /// The secret presented as the bearer token.
    token: Option<String>,
    /// The token as given, with its pinned fingerprint, for clients made from this one.
    given_token: Option<String>,
    agent: ureq::Agent,
    /// No read timeout: `run` and `logs --tail` streams stay quiet for as long as they like.
    stream_agent: ureq::Agent,
}

/// `host:port` or a URL to `http://host:port` without a trailing slash.
pub fn normalize_url(raw: &str) -> Result<String> {
    let raw = raw.trim().trim_end_matches('/');
    if raw.is_empty() {
        return Err(usage("the coordinator URL is empty"));
    }
    if raw.starts_with("http://") || raw.starts_with("https://") {
        Ok(raw.to_string())
    } else if raw.contains("://") {
        Err(usage(format!(
            "coordinator URL {raw}: expected https://HOST:PORT or http://HOST:PORT"
        )))
    } else {
        Ok(format!("http://{raw}"))
    }
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        Client::with_timeouts(base, token, Duration::from_secs(5), Duration::from_secs(60))
    }

    /// A client whose ordinary requests give up sooner (the console polls and must notice a
    /// coordinator that stopped answering).
    pub fn with_timeouts(
        base: &str,
        token: Option<String>,
        connect: Duration,
        read: Duration,
    ) -> Result<Client> {
        let base = normalize_url(base)?;
        // `SECRET@sha256:HEX`: the secret to present and the certificate to pin.
        let given_token = token.filter(|t| !t.is_empty());
        let (token, pin) = match given_token.clone() {
            Some(t) => {
                let (secret, pin) =
                    dyno_shared::tls::split_token(&t).map_err(|e| usage(e.to_string()))?;
                (Some(secret), pin)
            }
            None => (None, None),
        };
        let tls = dyno_shared::tls::client_config(pin);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(connect)
            .timeout_read(read)
            .timeout_write(Duration::from_secs(120))
            .tls_config(tls.clone())
            .build();
        let stream_agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_write(Duration::from_secs(60))
            .tls_config(tls)
            .build();
        Ok(Client {
            base,
            token,
            given_token,
            agent,
            stream_agent,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token as given (with any `@sha256:` pin), to make other clients from.
    pub fn token(&self) -> Option<&str> {
        self.given_token.as_deref()
    }

    fn request(&self, agent: &ureq::Agent, method: &str, path: &str) -> ureq::Request {
        let req = agent.request(method, &format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.get_query(path, &[])
    }

    pub fn get_query<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        let mut req = self.request(&self.agent, "GET", path);
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.json(req.call())
    }

    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let req = self.request(&self.agent, method, path);
        self.json(req.send_json(body))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let req = self.request(&self.agent, "DELETE", path);
        self.json(req.call())
    }

    pub fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        content_type: &str,
        body: &[u8],
    ) -> Result<T> {
        let mut req = self
            .request(&self.agent, "POST", path)
            .set("Content-Type", content_type);
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.json(req.send_bytes(body))
    }

    /// Starts a streaming request and returns its body as lines (NDJSON).
    pub fn stream(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<BufReader<Box<dyn Read + Send>>> {
        let mut req = self.request(&self.stream_agent, method, path);
        for (k, v) in query {
            req = req.query(k, v);
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = result.map_err(|e| self.error(e))?;
        Ok(BufReader::with_capacity(64 * 1024, resp.into_reader()))
    }

    /// `GET /healthz`, which needs no token.
    pub fn healthy(&self) -> bool {
        self.agent
            .get(&format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(2))
            .call()
            .is_ok()
    }

    fn json<T: DeserializeOwned>(&self, result: Result<ureq::Response, ureq::Error>) -> Result<T> {
        let resp = result.map_err(|e| self.error(e))?;
        let url = resp.get_url().to_string();
        let text = resp.into_string().map_err(|e| ApiError {
            status: None,
            id: String::new(),
            message: format!("failed to read the answer from {url}: {e}"),
        })?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow::Error::new(ApiError {
                status: None,
                id: String::new(),
                message: format!("unexpected answer from {url}: {e}"),
            })
        })
    }

    fn error(&self, err: ureq::Error) -> anyhow::Error {
        let api = match err {
            ureq::Error::Status(status, resp) => {
                let url = resp.get_url().to_string();
                let text = resp.into_string().unwrap_or_default();
                match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(body) => {
                        let message = if status == 401 {
                            format!(
                                "{} (run `dyno login`, pass --token or set DYNO_TOKEN; `dyno up` prints the root token)",
                                body.message
                            )
                        } else {
                            body.message
                        };
                        ApiError {
                            status: Some(status),
                            id: body.id,
                            message,
                        }
                    }
                    Err(_) => {
                        let text = text.trim();
                        let message = if text.is_empty() {
                            format!("{url} answered HTTP {status}")
                        } else {
                            format!("{url} answered HTTP {status}: {text}")
                        };
                        ApiError {
                            status: Some(status),
                            id: String::new(),
                            message,
                        }
                    }
                }
            }
            ureq::Error::Transport(t) => ApiError {
                status: None,
                id: String::new(),
                message: format!("cannot reach the coordinator at {}: {t}", self.base),
            },
        };
        anyhow::Error::new(api)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(
            normalize_url("127.0.0.1:7070").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(normalize_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(normalize_url("https://h:1/").unwrap(), "https://h:1");
        assert!(normalize_url("ftp://h").is_err());
        assert!(normalize_url(" ").is_err());
    }
}
