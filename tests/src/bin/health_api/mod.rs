//! The health-data API stand-in: Biotrackr's API as seen through Azure API Management.
//!
//! Every request must carry the subscription key in `Ocp-Apim-Subscription-Key` (compared in
//! constant time against a key file that is re-read per request, so rotation needs no restart);
//! otherwise APIM's 401. An optional record file gets one JSON line per request with header
//! NAMES only: it must never contain a header value, since tests read it to prove what reached
//! the upstream.
//!
//! Leak modes ([`leak`]) make it an upstream that hands a credential back, for the safety-net
//! suites; none is on unless asked for.

pub(crate) mod calendar;
mod gzip;
pub(crate) mod leak;
pub(crate) mod payloads;
pub(crate) mod records;

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use calendar::Day;
use leak::Leaks;
use records::Domain;

/// An answer's body: whole, or (a `split` leak) fed frame by frame.
pub(crate) type Body = Either<Full<Bytes>, leak::Split>;

/// The header APIM reads the subscription key from.
pub(crate) const SUBSCRIPTION_KEY_HEADER: &str = "ocp-apim-subscription-key";
const DEFAULT_PAGE_SIZE: u64 = 20;
const MAX_PAGE_SIZE: u64 = 50;
const MISSING_KEY: &str = "Access denied due to missing subscription key. Make sure to include \
                           subscription key when making requests to an API.";
const INVALID_KEY: &str = "Access denied due to invalid subscription key. Make sure to provide \
                           a valid key for an active subscription.";

/// The stand-in's configuration and its record file.
#[derive(Debug)]
pub(crate) struct HealthApi {
    key_file: PathBuf,
    prefix: String,
    record: Option<Mutex<std::fs::File>>,
    leaks: Leaks,
}

impl HealthApi {
    /// `prefix` like `/biotrackr/` (or empty) is stripped before routing; `record` is opened
    /// for appending; `leaks` is the leak mode at start and its `client-key` value's file.
    pub(crate) fn new(
        key_file: PathBuf,
        prefix: &str,
        record: Option<PathBuf>,
        leaks: Leaks,
    ) -> std::io::Result<Self> {
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() || prefix.starts_with('/') {
            prefix.to_owned()
        } else {
            format!("/{prefix}")
        };
        let record = match record {
            Some(path) => {
                Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
            }
            None => None,
        };
        Ok(Self { key_file, prefix, record, leaks })
    }

    /// Answers one request: authenticate, route (a leak mode changing a successful answer),
    /// record. The leak control endpoint is answered apart, unrecorded.
    pub(crate) async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        if parts.uri.path() == leak::CONTROL_PATH {
            return self.leaks.control(&parts.method, body).await;
        }
        let mode = self.leaks.mode();
        let response = match self.authenticate(&parts.headers).await {
            Ok(()) => match self.route(&parts.method, &parts.uri) {
                Ok(record) => self.leaks.answer(mode, record, &parts.headers).await,
                Err(refusal) => refusal.response().map(Either::Left),
            },
            Err(response) => response.map(Either::Left),
        };
        self.record(&parts, response.status(), mode);
        response
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<(), Response<Full<Bytes>>> {
        let expected = match tokio::fs::read(&self.key_file).await {
            Ok(mut key) => {
                while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    key.pop();
                }
                key
            }
            Err(error) => {
                eprintln!("health-api: cannot read the key file: {error}");
                Vec::new()
            }
        };
        if expected.is_empty() {
            return Err(apim_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Subscription key is not configured.",
            ));
        }
        let mut presented = headers.get_all(SUBSCRIPTION_KEY_HEADER).iter();
        let (Some(key), None) = (presented.next(), presented.next()) else {
            return Err(apim_error(StatusCode::UNAUTHORIZED, MISSING_KEY));
        };
        if bool::from(key.as_bytes().ct_eq(&expected)) {
            Ok(())
        } else {
            Err(apim_error(StatusCode::UNAUTHORIZED, INVALID_KEY))
        }
    }

    /// The record a request asks for, or the API's refusal.
    fn route(&self, method: &Method, uri: &http::Uri) -> Result<Value, Refusal> {
        let Some(rest) =
            uri.path().strip_prefix(self.prefix.as_str()).filter(|rest| rest.starts_with('/'))
        else {
            return Err(Refusal::not_found());
        };
        let segments: Vec<&str> = rest[1..].split('/').collect();
        let Some(domain) = segments.first().copied().and_then(Domain::from_segment) else {
            return Err(Refusal::not_found());
        };
        if method != Method::GET && method != Method::HEAD {
            return Err(Refusal {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "Method not allowed.".into(),
            });
        }
        match segments[1..] {
            [] => page_query(uri.query()).map(|page| records_page(domain, page)),
            [date] => by_date(domain, date),
            ["range", start, end] => {
                page_query(uri.query()).and_then(|page| range_page(domain, start, end, page))
            }
            _ => Err(Refusal::not_found()),
        }
    }

    fn record(&self, parts: &http::request::Parts, status: StatusCode, mode: leak::Mode) {
        if let Some(file) = &self.record {
            // `keys()` yields each name once, however often it was sent.
            let names: Vec<&str> = parts.headers.keys().map(|name| name.as_str()).collect();
            let mut line = json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                "headers": names,
                "has_x_api_key": parts.headers.contains_key("x-api-key"),
                "has_authorization": parts.headers.contains_key(header::AUTHORIZATION),
                "has_subscription_key": parts.headers.contains_key(SUBSCRIPTION_KEY_HEADER),
                "status": status.as_u16(),
            });
            if mode != leak::Mode::None {
                line["leak"] = json!(leak::Mode::name(mode));
            }
            let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(error) = writeln!(file, "{line}") {
                eprintln!("health-api: cannot write the record file: {error}");
            }
        }
    }
}

/// Serves `handler` on `listener` with HTTP/1 and HTTP/2, forever.
pub(crate) async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = handler(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A request the API turns down: status and a short message, rendered by [`Refusal::response`].
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    fn not_found() -> Self {
        Self { status: StatusCode::NOT_FOUND, message: "Resource not found".into() }
    }

    /// APIM's error answer; a 405 names the one method allowed.
    fn response(&self) -> Response<Full<Bytes>> {
        let mut response = apim_error(self.status, &self.message);
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET"));
        }
        response
    }
}

/// A validated page request.
#[derive(Debug, Clone, Copy)]
struct Page {
    number: u64,
    size: u64,
}

fn page_query(query: Option<&str>) -> Result<Page, Refusal> {
    let mut page = Page { number: 1, size: DEFAULT_PAGE_SIZE };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "pageNumber" => &mut page.number,
            "pageSize" => &mut page.size,
            _ => continue,
        };
        *slot = value
            .parse::<i64>()
            .ok()
            .and_then(|n| u64::try_from(n.max(0)).ok())
            .ok_or_else(|| Refusal::bad_request(format!("{name} must be an integer")))?;
    }
    if page.number < 1 || page.number > u64::from(u32::MAX) {
        return Err(Refusal::bad_request("pageNumber must be 1 or more"));
    }
    page.size = page.size.clamp(1, MAX_PAGE_SIZE);
    Ok(page)
}

fn parse_day(text: &str) -> Result<Day, Refusal> {
    Day::parse(text)
        .ok_or_else(|| Refusal::bad_request("Dates must be valid and formatted as yyyy-MM-dd."))
}

fn by_date(domain: Domain, date: &str) -> Result<Value, Refusal> {
    let day = parse_day(date)?;
    if !records::covers(day) {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            message: format!("No {} record found for {day}.", domain.as_str()),
        });
    }
    Ok(records::document(domain, day))
}

/// Days from `start` to `end`, clipped to the covered years, oldest first.
fn range_page(domain: Domain, start: &str, end: &str, page: Page) -> Result<Value, Refusal> {
    let (start, end) = (parse_day(start)?, parse_day(end)?);
    if start > end {
        return Err(Refusal::bad_request("startDate must not be after endDate."));
    }
    let first = start.max(records::first_day()).0;
    let last = end.min(records::last_day()).0;
    let total = u64::try_from(last - first + 1).unwrap_or(0);
    Ok(paged(total, page, |index| records::document(domain, Day(first + index))))
}

/// Every covered day, newest first.
fn records_page(domain: Domain, page: Page) -> Value {
    let last = records::last_day().0;
    let total = u64::try_from(last - records::first_day().0 + 1).unwrap_or(0);
    paged(total, page, |index| records::document(domain, Day(last - index)))
}

/// Biotrackr's `PaginationResponse`: items `[skip, skip + size)` of `total`.
fn paged(total: u64, page: Page, item: impl Fn(i64) -> Value) -> Value {
    let skip = (page.number - 1).saturating_mul(page.size);
    let items: Vec<Value> = (skip..total.min(skip.saturating_add(page.size)))
        .filter_map(|index| i64::try_from(index).ok())
        .map(item)
        .collect();
    let total_pages = total.div_ceil(page.size);
    json!({
        "Items": items,
        "TotalCount": total,
        "PageNumber": page.number,
        "PageSize": page.size,
        "TotalPages": total_pages,
        "HasPreviousPage": page.number > 1,
        "HasNextPage": page.number < total_pages,
    })
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// APIM's error body shape.
fn apim_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "statusCode": status.as_u16(), "message": message }))
}
