//! One connection's life: what its requests tell its watchdog, and the watchdog that ends it.
//!
//! No connection holds a slot for free. Until it has sent a first request (counted from accept,
//! after the TLS handshake) it has `header_read_timeout`; until one of its requests has been
//! authenticated, `unauthenticated_timeout`; with no request in flight, `idle_timeout`, after
//! which it is drained (HTTP/1.1 closes, h2 gets a GOAWAY). A request in flight, however long
//! (an SSE stream), is never cut by any of these.
//!
//! The requests only touch atomics; the watchdog wakes at its next deadline, never per request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

use super::ConnLimits;

/// How long a drained idle connection may take to say goodbye before it is closed.
const IDLE_DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// The same for a connection that never sent a request, or never an authenticated one: it
/// gets its GOAWAY (h2) but nothing it could still be waiting for.
const REFUSED_DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// What a request's handler knows of the connection it came on.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The TCP peer.
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Peer {
    /// Tells the watchdog that this connection has presented an authenticated request: it
    /// is no longer subject to `unauthenticated_timeout`.
    pub(crate) fn authenticated(&self) {
        if !self.state.authenticated.load(Ordering::Relaxed) {
            self.state.authenticated.store(true, Ordering::Relaxed);
        }
    }
}

/// The connection's requests as its watchdog sees them.
#[derive(Debug)]
pub(super) struct State {
    opened: Instant,
    started: AtomicU32,
    in_flight: AtomicU32,
    /// Milliseconds after `opened` when the last request ended.
    idle_since: AtomicU64,
    authenticated: AtomicBool,
}

impl State {
    /// A connection that has just been accepted (and, with TLS, completed its handshake).
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            started: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            authenticated: AtomicBool::new(false),
        })
    }

    /// A request has begun: its [`InFlight`] ends it when the response has been sent or
    /// abandoned.
    pub(super) fn begin(self: &Arc<Self>, addr: SocketAddr) -> (Peer, InFlight) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        (Peer { addr, state: self.clone() }, InFlight(self.clone()))
    }

    /// When a connection that has not sent a first request is refused.
    pub(super) fn first_request_deadline(&self, limits: &ConnLimits) -> Instant {
        self.opened + limits.header_read_timeout
    }

    fn at(&self, millis: u64) -> Instant {
        self.opened + Duration::from_millis(millis)
    }

    /// What to do at `now`, and when to look again.
    fn verdict(&self, limits: &ConnLimits, now: Instant) -> (Verdict, Instant) {
        let mut next = now + limits.idle_timeout;
        let mut due = |deadline: Instant, verdict: Verdict| {
            if now >= deadline {
                Some(verdict)
            } else {
                next = next.min(deadline);
                None
            }
        };
        let mut found = None;
        if self.started.load(Ordering::Relaxed) == 0 {
            found = found.or(due(self.first_request_deadline(limits), Verdict::Refuse));
        }
        if let Some(timeout) = limits.unauthenticated_timeout {
            if !self.authenticated.load(Ordering::Relaxed) {
                found = found.or(due(self.opened + timeout, Verdict::Refuse));
            }
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let idle_since = self.at(self.idle_since.load(Ordering::Relaxed));
            found = found.or(due(idle_since + limits.idle_timeout, Verdict::Drain));
        }
        (found.unwrap_or(Verdict::Keep), next)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// No request, or none authenticated, in time: say goodbye (GOAWAY) and close at once.
    Refuse,
    /// No request in flight for too long: let the protocol say goodbye (GOAWAY), then close.
    Drain,
}

/// One request in flight; ends it on drop.
#[derive(Debug)]
pub(super) struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let millis = self.0.opened.elapsed().as_millis() as u64;
            self.0.idle_since.store(millis, Ordering::Relaxed);
        }
    }
}

/// A response body that keeps its request in flight until hyper has sent or dropped it.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, in_flight: InFlight) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Drives `conn` until it ends, the watchdog ends it, or shutdown drains it (for up to
/// `limits.shutdown_grace`). `drain` starts a graceful close (HTTP/1.1 after the response in
/// progress, h2 by GOAWAY after its open streams), and `conn` is polled on until it ends.
pub(super) async fn supervise<C, E>(
    conn: C,
    drain: fn(Pin<&mut C>),
    state: &State,
    limits: &ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut draining_until: Option<Instant> = None;
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        drain(conn.as_mut());
        draining_until = Some(Instant::now() + limits.shutdown_grace);
    }
    loop {
        let (verdict, next) = match draining_until {
            Some(until) => (Verdict::Keep, until),
            None => state.verdict(limits, Instant::now()),
        };
        let limit = match verdict {
            Verdict::Keep => None,
            Verdict::Refuse => {
                tracing::debug!("connection closed: no request, or none authenticated, in time");
                Some(REFUSED_DRAIN_LIMIT)
            }
            Verdict::Drain => {
                tracing::debug!("idle connection drained");
                Some(IDLE_DRAIN_LIMIT)
            }
        };
        if let Some(limit) = limit {
            drain(conn.as_mut());
            draining_until = Some(Instant::now() + limit);
            continue;
        }
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(next) => {
                if draining_until.is_some_and(|until| Instant::now() >= until) {
                    return;
                }
            }
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_err() || *shutdown.borrow() {
                    drain(conn.as_mut());
                    draining_until = Some(Instant::now() + limits.shutdown_grace);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(unauthenticated: Option<u64>) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            unauthenticated_timeout: unauthenticated.map(Duration::from_secs),
            max_header_bytes: 8192,
            shutdown_grace: Duration::from_secs(20),
        }
    }

    fn addr() -> SocketAddr {
        ([127, 0, 0, 1], 1).into()
    }

    /// `secs` seconds after the connection opened.
    fn at(state: &State, secs: u64) -> Instant {
        state.opened + Duration::from_secs(secs)
    }

    #[test]
    fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
        let state = State::new();
        let limits = limits(None);
        let (verdict, next) = state.verdict(&limits, at(&state, 0));
        assert_eq!(verdict, Verdict::Keep);
        assert_eq!(next, at(&state, 10));
        assert_eq!(state.verdict(&limits, at(&state, 10)).0, Verdict::Refuse);
    }

    #[test]
    fn requests_that_never_authenticate_are_closed_even_when_busy() {
        let state = State::new();
        let limits = limits(Some(10));
        let (_peer, in_flight) = state.begin(addr());
        drop(in_flight);
        assert_eq!(state.verdict(&limits, at(&state, 9)).0, Verdict::Keep);
        let (_peer, _in_flight) = state.begin(addr());
        assert_eq!(state.verdict(&limits, at(&state, 10)).0, Verdict::Refuse);
    }

    #[test]
    fn a_request_in_flight_is_never_cut_and_idleness_starts_when_it_ends() {
        let state = State::new();
        let limits = limits(Some(10));
        let (peer, in_flight) = state.begin(addr());
        peer.authenticated();
        assert_eq!(state.verdict(&limits, at(&state, 3600)).0, Verdict::Keep, "a long stream");
        drop(in_flight);
        // It ended (just now, in real time): idle from then on.
        let ended = Instant::now();
        let (verdict, next) = state.verdict(&limits, ended + Duration::from_secs(59));
        assert_eq!(verdict, Verdict::Keep);
        assert!(next <= ended + Duration::from_secs(60) + Duration::from_millis(1));
        let later = ended + Duration::from_secs(61);
        assert_eq!(state.verdict(&limits, later).0, Verdict::Drain);
    }
}
