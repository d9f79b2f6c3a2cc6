//! The retry policy shared by the HTTP providers: exponential backoff with jitter on 429, 5xx,
//! timeouts and connection errors, honouring `Retry-After`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::ModelError;
use crate::experiment::ModelConfig;

/// How a provider retries. Built from `model.timeout_sec` and `model.max_retries`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Per attempt, covering connect, send and reading the whole body.
    pub timeout: Duration,
    /// The first backoff; doubled on each retry.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A server's `Retry-After` is honoured up to this long; longer asks are treated as this.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn from_config(cfg: &ModelConfig) -> Self {
        RetryPolicy {
            max_retries: cfg.max_retries,
            timeout: Duration::from_secs(cfg.timeout_sec.max(1)),
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `attempt` (0-based): `base * 2^attempt`, capped, with
    /// jitter in [50 %, 100 %] so that many trials hitting one rate limit spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(self.max_delay);
        let jitter: f64 = 0.5 + rand::random::<f64>() * 0.5;
        capped.mul_f64(jitter)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            timeout: Duration::from_secs(120),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// POST `body` as JSON to `url` and return the JSON of a 2xx answer, retrying per `policy`,
/// with the time spent on failed attempts and backoff before it: that time is the API's
/// trouble, not the agent's, and is not charged to the agent's budget.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
    body: &Value,
    policy: &RetryPolicy,
) -> Result<(Value, Duration), ModelError> {
    let started = std::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        let mut req = client.post(url).timeout(policy.timeout).json(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let tried = std::time::Instant::now();
        let (err, wait_hint) = match send_once(req, policy).await {
            Ok(v) => return Ok((v, tried.duration_since(started))),
            Err(e) => e,
        };
        if !is_retryable(&err) || attempt >= policy.max_retries {
            return Err(err);
        }
        let wait = wait_hint
            .map(|w| w.min(policy.max_retry_after))
            .unwrap_or_else(|| policy.backoff(attempt));
        tracing::debug!(attempt, ?wait, error = %err, "retrying model request");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

type Failure = (ModelError, Option<Duration>);

async fn send_once(req: reqwest::RequestBuilder, policy: &RetryPolicy) -> Result<Value, Failure> {
    let secs = policy.timeout.as_secs();
    let resp = req.send().await.map_err(|e| (classify(e, secs), None))?;
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    // Reading the body is covered by the same per-request timeout.
    let text = resp.text().await.map_err(|e| (classify(e, secs), None))?;
    if !status.is_success() {
        return Err((
            ModelError::Http {
                status: status.as_u16(),
                body: clip(&text, 2000),
            },
            retry_after,
        ));
    }
    serde_json::from_str(&text).map_err(|e| {
        (
            ModelError::Protocol(format!("response is not JSON ({e}): {}", clip(&text, 300))),
            None,
        )
    })
}

fn classify(e: reqwest::Error, timeout_secs: u64) -> ModelError {
    if e.is_timeout() {
        ModelError::Timeout(timeout_secs)
    } else if e.is_decode() {
        ModelError::Protocol(e.to_string())
    } else if e.is_builder() {
        ModelError::Config(e.to_string())
    } else {
        // Connection refused/reset, DNS, TLS: all worth another try.
        ModelError::Connect(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn is_retryable(e: &ModelError) -> bool {
    match e {
        ModelError::Http { status, .. } => {
            *status == StatusCode::TOO_MANY_REQUESTS.as_u16() || (500..600).contains(status)
        }
        ModelError::Timeout(_) | ModelError::Connect(_) => true,
        ModelError::Protocol(_) | ModelError::Config(_) => false,
    }
}

/// `Retry-After` in seconds (integer or decimal). HTTP dates are rare from model APIs and are
/// left to the exponential backoff.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// At most `max` characters, on a char boundary.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
