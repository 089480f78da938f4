//! The typed client of the health-data API, reached through keyward's egress.
//!
//! It speaks plain HTTP to a loopback address and must never hold or send a credential of any
//! kind: keyward's egress adds the upstream's key. Upstream failures come back as a short
//! [`HealthApiError`] (a status code at most); an upstream body is never echoed to the caller.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Whole-call budget: connect, response head and body.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that has not opened by then will not open in time for the call either.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A page of 50 food records is well under this; anything larger is not the API we know.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One of the four record families the health-data API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Domain {
    Activity,
    Sleep,
    Food,
    Vitals,
}

impl Domain {
    /// The path segment (and tool-name infix) of this domain.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Activity => "activity",
            Self::Sleep => "sleep",
            Self::Food => "food",
            Self::Vitals => "vitals",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated calendar date, rendered as `yyyy-MM-dd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Date {
    year: u16,
    month: u8,
    day: u8,
}

impl Date {
    /// Parses exactly `yyyy-MM-dd` and accepts only days that exist in the calendar.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u16> {
            let digits = &bytes[range];
            digits
                .iter()
                .all(u8::is_ascii_digit)
                .then(|| digits.iter().fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0')))
        };
        let year = number(0..4)?;
        let month = u8::try_from(number(5..7)?).ok()?;
        let day = u8::try_from(number(8..10)?).ok()?;
        let valid = year >= 1 && (1..=12).contains(&month) && day >= 1 && {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let last = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day <= last
        };
        valid.then_some(Self { year, month, day })
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A validated page request: `number >= 1`, `size` in `1..=50`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) number: u32,
    pub(crate) size: u32,
}

/// Why a call to the health-data API did not produce a record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HealthApiError {
    /// The API answered with a non-2xx status.
    #[error("the health-data API answered {0}")]
    Status(StatusCode),
    /// The whole call did not finish within its budget.
    #[error("the health-data API did not answer in time")]
    Timeout,
    /// No connection, a reset, or a malformed response head.
    #[error("the health-data API could not be reached")]
    Transport(#[source] hyper_util::client::legacy::Error),
    /// The response body broke off or exceeded the size cap.
    #[error("the health-data API sent an unreadable or oversized body")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The 2xx body was not JSON.
    #[error("the health-data API sent a body that is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The request URI could not be built (a bad base URL slipped through).
    #[error("the health-data API URL is invalid")]
    Uri(#[source] http::Error),
}

/// The base URL was rejected at start-up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BaseUrlError {
    #[error("not a valid URL")]
    Invalid(#[source] http::uri::InvalidUri),
    #[error("only http:// is supported: TLS to the upstream is keyward's egress's job")]
    NotHttp,
    #[error("the URL must have a host")]
    NoHost,
    #[error("the URL must not carry a query or a fragment")]
    HasQuery,
}

/// The client. Cheap to clone: the connection pool is shared.
#[derive(Debug, Clone)]
pub(crate) struct HealthApi {
    /// Always ends with `/`, so `{base}{domain}/...` joins cleanly.
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HealthApi {
    /// Builds a client for `base`, e.g. `http://127.0.0.1:8090/health/`.
    pub(crate) fn new(base: &str) -> Result<Self, BaseUrlError> {
        let uri: Uri = base.parse().map_err(BaseUrlError::Invalid)?;
        if uri.scheme_str() != Some("http") {
            return Err(BaseUrlError::NotHttp);
        }
        if uri.host().is_none() {
            return Err(BaseUrlError::NoHost);
        }
        if uri.query().is_some() || base.contains('#') {
            return Err(BaseUrlError::HasQuery);
        }
        let mut base = base.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base, client, timeout: CALL_TIMEOUT })
    }

    /// Replaces the whole-call budget (tests use a short one).
    #[cfg(test)]
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL, for logs (it holds no secret: the backend has none).
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `GET {base}{domain}/{date}`: one day's record.
    pub(crate) async fn by_date(
        &self,
        domain: Domain,
        date: Date,
    ) -> Result<serde_json::Value, HealthApiError> {
        self.get(self.by_date_url(domain, date)).await
    }

    /// `GET {base}{domain}/range/{start}/{end}?pageNumber=&pageSize=`: a page of a date range.
    pub(crate) async fn by_date_range(
        &self,
        domain: Domain,
        start: Date,
        end: Date,
        page: Page,
    ) -> Result<serde_json::Value, HealthApiError> {
        self.get(self.by_date_range_url(domain, start, end, page)).await
    }

    /// `GET {base}{domain}?pageNumber=&pageSize=`: a page of every record.
    pub(crate) async fn records(
        &self,
        domain: Domain,
        page: Page,
    ) -> Result<serde_json::Value, HealthApiError> {
        self.get(self.records_url(domain, page)).await
    }

    fn by_date_url(&self, domain: Domain, date: Date) -> String {
        format!("{}{domain}/{date}", self.base)
    }

    fn by_date_range_url(&self, domain: Domain, start: Date, end: Date, page: Page) -> String {
        format!(
            "{}{domain}/range/{start}/{end}?pageNumber={}&pageSize={}",
            self.base, page.number, page.size
        )
    }

    fn records_url(&self, domain: Domain, page: Page) -> String {
        format!("{}{domain}?pageNumber={}&pageSize={}", self.base, page.number, page.size)
    }

    /// One GET under the whole-call budget. Every URL piece is validated or numeric, so the
    /// URL needs no escaping.
    async fn get(&self, url: String) -> Result<serde_json::Value, HealthApiError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(HealthApiError::Uri)?;
        let call = async {
            let response = self.client.request(request).await.map_err(HealthApiError::Transport)?;
            let status = response.status();
            if !status.is_success() {
                // The body is dropped unread: nothing of it reaches the caller.
                return Err(HealthApiError::Status(status));
            }
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(HealthApiError::Body)?
                .to_bytes();
            serde_json::from_slice(&body).map_err(HealthApiError::NotJson)
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| HealthApiError::Timeout)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).expect(text)
    }

    #[test]
    fn dates_must_be_real_and_exactly_formatted() {
        for good in ["2024-02-29", "2025-01-01", "2026-12-31", "2000-02-29", "0001-01-01"] {
            assert_eq!(date(good).to_string(), good);
        }
        for bad in [
            "2025-02-29",
            "1900-02-29",
            "2025-04-31",
            "2025-13-01",
            "2025-00-10",
            "2025-01-00",
            "0000-01-01",
            "2025-1-01",
            "2025/01/01",
            "20250101",
            "2025-01-01T00:00:00",
            " 2025-01-01",
            "+025-01-01",
            "２０２５-01-01",
            "",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_order_chronologically() {
        assert!(date("2024-12-31") < date("2025-01-01"));
        assert!(date("2025-02-01") > date("2025-01-31"));
    }

    #[test]
    fn base_url_gains_a_trailing_slash_and_must_be_plain_http() {
        assert_eq!(
            HealthApi::new("http://127.0.0.1:8090/health").unwrap().base(),
            "http://127.0.0.1:8090/health/"
        );
        assert!(matches!(
            HealthApi::new("https://apim.example/biotrackr/"),
            Err(BaseUrlError::NotHttp)
        ));
        assert!(matches!(HealthApi::new("/health/"), Err(BaseUrlError::NotHttp)));
        assert!(matches!(
            HealthApi::new("http://127.0.0.1:8090/health/?x=1"),
            Err(BaseUrlError::HasQuery)
        ));
        assert!(HealthApi::new("not a url").is_err());
    }

    #[test]
    fn urls_follow_the_api_routes() {
        let api = HealthApi::new("http://127.0.0.1:8090/health/").unwrap();
        let page = Page { number: 2, size: 50 };
        assert_eq!(
            api.by_date_url(Domain::Activity, date("2025-02-02")),
            "http://127.0.0.1:8090/health/activity/2025-02-02"
        );
        assert_eq!(
            api.by_date_range_url(Domain::Sleep, date("2025-01-01"), date("2025-01-31"), page),
            "http://127.0.0.1:8090/health/sleep/range/2025-01-01/2025-01-31?pageNumber=2&pageSize=50"
        );
        assert_eq!(
            api.records_url(Domain::Vitals, page),
            "http://127.0.0.1:8090/health/vitals?pageNumber=2&pageSize=50"
        );
        for url in
            [api.by_date_url(Domain::Food, date("2025-02-02")), api.records_url(Domain::Food, page)]
        {
            assert!(url.parse::<Uri>().is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_api_is_an_error_not_a_panic() {
        // Bind then drop, so the port is very likely closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let api = HealthApi::new(&format!("http://{addr}/health/")).unwrap();
        let err = api.by_date(Domain::Food, date("2025-02-02")).await.unwrap_err();
        assert!(matches!(err, HealthApiError::Transport(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_silent_api_times_out() {
        // Accepts and reads, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
        });
        let api = HealthApi::new(&format!("http://{addr}/health/"))
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let err = api.records(Domain::Sleep, Page { number: 1, size: 1 }).await;
        assert!(matches!(err, Err(HealthApiError::Timeout)), "{err:?}");
        server.abort();
    }
}
