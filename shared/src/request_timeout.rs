//! kubectl's `--request-timeout`: how long one request to the apiserver may take, from sending it
//! to the last byte of its answer (a watch ends when the time is up, as with kubectl).
//!
//! The value reads as kubectl reads it: `0` (the default) means no limit, a whole number is
//! seconds, anything else is a Go duration (`500ms`, `30s`, `1m30s`, `2h`). kube's own
//! `read_timeout` only limits the silence between two reads, so the limit is a layer around the
//! whole client instead: it bounds the connection, every retry and the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use thiserror::Error;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest Go duration (`math.MaxInt64` nanoseconds).
const MAX: Duration = Duration::from_nanos(i64::MAX as u64);

/// A `--request-timeout` value: no limit, or a limit and the text it was given as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestTimeout {
    limit: Option<(Duration, Arc<str>)>,
}

/// A `--request-timeout` value kubectl would refuse too. clap names the flag and the value.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "not a timeout: give a whole number of seconds, or a number with a unit (e.g. 1s, 2m, 3h, \
     500ms); 0 means no timeout"
)]
pub struct InvalidTimeout(pub String);

/// A request that did not finish within its `--request-timeout`.
#[derive(Debug, Error)]
#[error("the request to the apiserver did not finish within --request-timeout={0}")]
pub struct TimedOut(Arc<str>);

impl RequestTimeout {
    /// Reads a value as kubectl does (client-go's `clientcmd.ParseTimeout`).
    pub fn parse(text: &str) -> Result<Self, InvalidTimeout> {
        let limit = match text.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => go_duration(text).ok_or_else(|| InvalidTimeout(text.to_owned()))?,
        };
        // Go's durations end at about 292 years.
        if limit > MAX {
            return Err(InvalidTimeout(text.to_owned()));
        }
        Ok(RequestTimeout {
            limit: (!limit.is_zero()).then(|| (limit, Arc::from(text))),
        })
    }

    /// The limit; `None` when requests may take as long as they take.
    pub fn limit(&self) -> Option<Duration> {
        self.limit.as_ref().map(|(limit, _)| *limit)
    }

    /// The layer that enforces the limit, for [`kube::client::ClientBuilder::with_layer`]; `None`
    /// when there is no limit.
    pub fn layer(&self) -> Option<RequestTimeoutLayer> {
        self.limit
            .as_ref()
            .map(|(limit, text)| RequestTimeoutLayer {
                limit: *limit,
                text: text.clone(),
            })
    }
}

impl std::str::FromStr for RequestTimeout {
    type Err = InvalidTimeout;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RequestTimeout::parse(text)
    }
}

/// A Go `time.ParseDuration` string without a sign: one or more decimal numbers, each with a unit
/// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`); a bare `0` is zero.
fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut nanos: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(len)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        nanos = nanos.checked_add(whole.checked_mul(scale)?)?;
        if !fraction.is_empty() {
            // Digits beyond nanoseconds cannot matter; Go drops them too.
            let digits = &fraction[..fraction.len().min(30)];
            let value: u128 = digits.parse().ok()?;
            nanos =
                nanos.checked_add(value.checked_mul(scale)? / 10u128.pow(digits.len() as u32))?;
        }
        rest = after;
    }
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// Gives every request `limit` from the moment it is sent to the end of its answer.
#[derive(Debug, Clone)]
pub struct RequestTimeoutLayer {
    limit: Duration,
    text: Arc<str>,
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeoutService {
            inner,
            limit: self.limit,
            text: self.text.clone(),
        }
    }
}

/// The service [`RequestTimeoutLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestTimeoutService<S> {
    inner: S,
    limit: Duration,
    text: Arc<str>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RequestTimeoutService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<DeadlineBody<ResBody>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let deadline = Instant::now() + self.limit;
        let text = self.text.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, response).await {
                Ok(Ok(response)) => Ok(response.map(|body| DeadlineBody {
                    body,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    text,
                })),
                Ok(Err(err)) => Err(err.into()),
                Err(_elapsed) => Err(Box::new(TimedOut(text)) as BoxError),
            }
        })
    }
}

/// An answer's body that fails with [`TimedOut`] once the request's time is up.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    body: B,
    deadline: Pin<Box<Sleep>>,
    text: Arc<str>,
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(TimedOut(this.text.clone())))));
        }
        Pin::new(&mut this.body)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str) -> Option<Duration> {
        RequestTimeout::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .limit()
    }

    #[test]
    fn reads_values_as_kubectl_does() {
        assert_eq!(limit("0"), None, "0 is no timeout");
        assert_eq!(limit("0s"), None);
        assert_eq!(
            limit("30"),
            Some(Duration::from_secs(30)),
            "a bare number is seconds"
        );
        assert_eq!(limit("30s"), Some(Duration::from_secs(30)));
        assert_eq!(limit("1m"), Some(Duration::from_secs(60)));
        assert_eq!(limit("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(limit("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(limit("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(limit(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(limit("1ms"), Some(Duration::from_millis(1)));
        assert_eq!(limit("250us"), Some(Duration::from_micros(250)));
        assert_eq!(limit("250\u{b5}s"), Some(Duration::from_micros(250)));
        assert_eq!(limit("7ns"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn refuses_what_kubectl_refuses() {
        for bad in [
            "",
            "abc",
            "-1",
            "-5s",
            "1x",
            "s",
            "1.s.",
            "1 s",
            "5d",
            "1m-3s",
            "99999999999h",
            "9999999999999",
        ] {
            let err = RequestTimeout::parse(bad).expect_err(bad);
            assert_eq!(err.0, bad);
        }
    }

    #[test]
    fn a_timed_out_request_names_the_flag_as_given() {
        let timeout = RequestTimeout::parse("1m30s").expect("a valid value");
        let layer = timeout.layer().expect("a limit");
        assert_eq!(
            TimedOut(layer.text.clone()).to_string(),
            "the request to the apiserver did not finish within --request-timeout=1m30s"
        );
        assert!(RequestTimeout::default().layer().is_none());
    }
}
