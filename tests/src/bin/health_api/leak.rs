//! Leak modes: the stand-in turned into an upstream that hands back a credential, so that the
//! suites can prove keyward's safety net catches it on its way to the backend and the client.
//!
//! A mode is set at start (`--leak MODE`) or at any time through `POST /_leak {"mode": ...}` on
//! the stand-in's own port (outside the API's prefix, so keyward's egress cannot reach it; a
//! test's control plane, not recorded). It changes only a successful answer, and only while it
//! is on: with `none`, every answer is byte for byte the normal one. The stand-in itself never
//! prints or records a value; it only puts one in a body, which is the point.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Either, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{gzip, json_response, Body, SUBSCRIPTION_KEY_HEADER};

/// The control endpoint's path.
pub(crate) const CONTROL_PATH: &str = "/_leak";
/// The pause between the two halves of a `split` answer: long enough that they cross the
/// connection as two reads.
const SPLIT_PAUSE: Duration = Duration::from_millis(100);

/// What a successful answer carries besides its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// The normal answer, unchanged.
    #[default]
    None,
    /// Every request header, the subscription key too, under `headers` (httpbin's shape).
    Echo,
    /// The subscription key base64-encoded, alone and behind a prefix (another alignment).
    Base64,
    /// The subscription key in the record, the body cut in the key's middle into two chunks.
    Split,
    /// The record and the key, gzip-compressed, `Content-Encoding: gzip` though nobody asked.
    Gzip,
    /// The value of `--leak-value-file` (a client key, say) as a field of the record.
    ClientKey,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Echo => "echo",
            Self::Base64 => "base64",
            Self::Split => "split",
            Self::Gzip => "gzip",
            Self::ClientKey => "client-key",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(name, false).ok()
    }
}

/// The mode now and where a `client-key` value comes from.
#[derive(Debug)]
pub(crate) struct Leaks {
    mode: Mutex<Mode>,
    value_file: Option<PathBuf>,
}

impl Leaks {
    pub(crate) fn new(mode: Mode, value_file: Option<PathBuf>) -> std::io::Result<Self> {
        if mode == Mode::ClientKey && value_file.is_none() {
            return Err(std::io::Error::other("--leak client-key needs --leak-value-file"));
        }
        Ok(Self { mode: Mutex::new(mode), value_file })
    }

    pub(crate) fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `GET /_leak`: the mode; `POST /_leak {"mode": "echo"}`: sets it.
    pub(crate) async fn control(&self, method: &Method, body: Incoming) -> Response<Body> {
        let answer =
            |status: StatusCode, body: Value| json_response(status, &body).map(Either::Left);
        if method == Method::GET {
            return answer(StatusCode::OK, json!({ "mode": self.mode().name() }));
        }
        if method != Method::POST {
            return answer(StatusCode::METHOD_NOT_ALLOWED, json!({ "error": "GET or POST" }));
        }
        let Ok(bytes) = Limited::new(body, 4096).collect().await.map(|b| b.to_bytes()) else {
            return answer(StatusCode::BAD_REQUEST, json!({ "error": "unreadable body" }));
        };
        let asked = serde_json::from_slice::<Value>(&bytes).ok();
        let Some(mode) = asked.as_ref().and_then(|v| v["mode"].as_str()).and_then(Mode::parse)
        else {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({ "error": "mode: none, echo, base64, \
                split, gzip or client-key" }),
            );
        };
        if mode == Mode::ClientKey && self.value_file.is_none() {
            return answer(StatusCode::CONFLICT, json!({ "error": "no --leak-value-file" }));
        }
        *self.mode.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
        answer(StatusCode::OK, json!({ "mode": mode.name() }))
    }

    /// A successful answer of `record`, with the leak `mode` asks for.
    pub(crate) async fn answer(
        &self,
        mode: Mode,
        mut record: Value,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let key = headers
            .get(SUBSCRIPTION_KEY_HEADER)
            .map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned())
            .unwrap_or_default();
        let fields = match mode {
            Mode::None => return json_response(StatusCode::OK, &record).map(Either::Left),
            Mode::Echo => {
                record["headers"] = echoed(headers);
                return json_response(StatusCode::OK, &record).map(Either::Left);
            }
            Mode::Base64 => json!({
                "token": base64(key.as_bytes()),
                "basic": base64(format!("apim:{key}").as_bytes()),
            }),
            Mode::Split | Mode::Gzip => json!({ "subscriptionKey": key }),
            Mode::ClientKey => match self.value().await {
                Some(value) => json!({ "deviceToken": value }),
                None => {
                    let error = json!({ "statusCode": 500, "message": "No leak value." });
                    return json_response(StatusCode::INTERNAL_SERVER_ERROR, &error)
                        .map(Either::Left);
                }
            },
        };
        record["Sync"] = fields;
        match mode {
            Mode::Split => split(&record.to_string(), &key),
            Mode::Gzip => {
                let mut response = json_response(StatusCode::OK, &record);
                *response.body_mut() =
                    Full::new(gzip::compress(record.to_string().as_bytes()).into());
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                response.map(Either::Left)
            }
            _ => json_response(StatusCode::OK, &record).map(Either::Left),
        }
    }

    /// The value file's contents, trailing CR/LF dropped; re-read on every request, so that a
    /// rotated value is the one leaked.
    async fn value(&self) -> Option<String> {
        let text = tokio::fs::read_to_string(self.value_file.as_ref()?).await.ok()?;
        let value = text.trim_end_matches(['\r', '\n']);
        (!value.is_empty()).then(|| value.to_owned())
    }
}

/// Request headers as httpbin's `/headers` shows them: a repeated one joined with `,`.
fn echoed(headers: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        map.insert(name.as_str().to_owned(), Value::String(values.join(",")));
    }
    Value::Object(map)
}

/// `text` as two body frames, cut in the middle of `key` (or of the text, without one), the
/// second sent [`SPLIT_PAUSE`] after the first; chunked, since the length is not declared.
fn split(text: &str, key: &str) -> Response<Body> {
    let at = match text.find(key).filter(|_| !key.is_empty()) {
        Some(start) => start + key.len() / 2,
        None => text.len() / 2,
    };
    let (first, second) = text.as_bytes().split_at(at);
    let (first, second) = (Bytes::copy_from_slice(first), Bytes::copy_from_slice(second));
    let body = Split {
        first: Some(first),
        pause: Box::pin(tokio::time::sleep(SPLIT_PAUSE)),
        second: Some(second),
    };
    let mut response = Response::new(Either::Right(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

/// A body of two frames with a pause between them (each its own HTTP chunk).
#[derive(Debug)]
pub(crate) struct Split {
    first: Option<Bytes>,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
    second: Option<Bytes>,
}

impl hyper::body::Body for Split {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        std::task::ready!(std::future::Future::poll(self.pause.as_mut(), cx));
        std::task::Poll::Ready(
            self.second.take().map(|second| Ok(hyper::body::Frame::data(second))),
        )
    }
}

/// Standard base64 with padding, as a debug field would carry it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from_be_bytes([0, group[0], group[1], group[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_as_the_standard_does() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"apim:k"), "YXBpbTpr");
    }

    #[test]
    fn modes_are_named_as_on_the_command_line() {
        for mode in [Mode::None, Mode::Echo, Mode::Base64, Mode::Split, Mode::Gzip, Mode::ClientKey]
        {
            assert_eq!(Mode::parse(mode.name()), Some(mode));
        }
        assert_eq!(Mode::parse("nope"), None);
    }
}
