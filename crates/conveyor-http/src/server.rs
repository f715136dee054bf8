//! The accept loop: hyper's HTTP/1 connection builder with limits `axum::serve` cannot
//! set — a connection must send its request headers within `header_timeout` (from the
//! moment it opens, or from its first byte after an earlier request), a kept-alive
//! connection may wait `idle_timeout` for its next request, and at most
//! `max_connections` are served at once (the rest wait in the kernel's backlog). Body
//! reads are timed by the handlers (`read_body`). Shutdown stops accepting, lets each
//! connection finish the request in flight, then returns.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

/// How long connections may take; see the module's comment.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// How often each connection's deadlines are looked at.
const TICK: Duration = Duration::from_millis(250);

pub(crate) async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(max));
    let (close_tx, close_rx) = watch::channel(false);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        // A free place first, so a full server does not accept (and hold) connections.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let close = close_rx.clone();
        tokio::spawn(async move {
            connection(stream, service, limits, close).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    // Every connection gives its permit back when it ends.
    let _ = permits.acquire_many(max as u32).await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    limits: ConnectionLimits,
    mut close: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let in_service = activity.clone();
    let handler = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = InFlight::begin(in_service.clone());
        let answer = service.call(request);
        async move {
            let response: Result<axum::response::Response<Body>, std::convert::Infallible> =
                answer.await;
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer (which also runs while a kept-alive connection waits) is
    // only a backstop here; `Activity` tells the two waits apart.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout + limits.idle_timeout);
    let conn = builder.serve_connection(io, handler);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(TICK);
    let mut closing = *close.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            changed = close.changed(), if !closing => {
                if changed.is_err() || *close.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = tick.tick() => {
                if let Some(reason) = activity.expired(Instant::now(), &limits) {
                    tracing::debug!(reason, "connection closed");
                    // Dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}

/// What a connection is doing, for its deadlines.
struct Activity {
    state: Mutex<ActivityState>,
}

struct ActivityState {
    /// Requests being handled.
    in_flight: usize,
    /// Since when bytes of a request not yet handed to the router have been arriving
    /// (a new connection counts from its opening).
    header_since: Option<Instant>,
    /// The last byte read or written, or the last request's end.
    last: Instant,
}

impl Activity {
    fn new(now: Instant) -> Activity {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                header_since: Some(now),
                last: now,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ActivityState) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    fn read(&self, now: Instant) {
        self.with(|s| {
            s.last = now;
            if s.in_flight == 0 && s.header_since.is_none() {
                s.header_since = Some(now);
            }
        });
    }

    fn wrote(&self, now: Instant) {
        self.with(|s| s.last = now);
    }

    /// Why the connection must be closed now, if it must.
    fn expired(&self, now: Instant, limits: &ConnectionLimits) -> Option<&'static str> {
        self.with(|s| {
            if s.in_flight > 0 {
                return None;
            }
            match s.header_since {
                Some(since) if now.duration_since(since) > limits.header_timeout => {
                    Some("the request headers did not arrive in time")
                }
                None if now.duration_since(s.last) > limits.idle_timeout => {
                    Some("idle keep-alive connection")
                }
                _ => None,
            }
        })
        .flatten()
    }
}

/// Marks a request in flight while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> InFlight {
        activity.with(|s| {
            s.in_flight += 1;
            s.header_since = None;
        });
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.with(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.last = now;
        });
    }
}

/// A socket that reports its reads and writes to its `Activity`.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read(Instant::now());
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote(Instant::now());
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote(Instant::now());
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        }
    }

    #[test]
    fn a_new_connection_must_send_its_headers_in_time() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(a.expired(t0 + Duration::from_secs(9), &limits()), None);
        assert!(a.expired(t0 + Duration::from_secs(11), &limits()).is_some());
    }

    #[test]
    fn a_request_in_flight_is_never_cut_and_then_the_idle_limit_applies() {
        let t0 = Instant::now();
        let a = Arc::new(Activity::new(t0));
        a.read(t0);
        let guard = InFlight::begin(a.clone());
        assert_eq!(a.expired(t0 + Duration::from_secs(100), &limits()), None);
        drop(guard);
        let end = Instant::now();
        assert_eq!(a.expired(end + Duration::from_secs(59), &limits()), None);
        assert_eq!(
            a.expired(end + Duration::from_secs(61), &limits()),
            Some("idle keep-alive connection")
        );
        // The first byte of the next request starts the header clock.
        a.read(end + Duration::from_secs(1));
        assert_eq!(
            a.expired(end + Duration::from_secs(12), &limits()),
            Some("the request headers did not arrive in time")
        );
    }
}
