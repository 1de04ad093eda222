//! The HTTP/1.1 server loop (used by `eslab serve`), with the limits a service
//! exposed to untrusted clients needs (axum's own `serve` sets none of them):
//!
//! - **header-read timeout** ([`ConnectionLimits::header_read_timeout`]): a
//!   request's head must arrive within it, counted from the first read; the
//!   same timer runs while a kept-alive connection waits for its next request,
//!   so it is also the **idle timeout**. Connections that send nothing, or a
//!   byte at a time (slowloris), are closed when it expires.
//! - **connection cap** ([`ConnectionLimits::max_connections`]): when every
//!   slot is taken, a new connection takes the slot of the connection that has
//!   been idle longest (no request in progress: waiting for a first or next
//!   request head, or writing out a finished response), which is closed. Idle
//!   and slow connections therefore never lock out a new client; only when
//!   every connection is busy inside a request does the server stop accepting
//!   until one finishes (new connections wait in the kernel's backlog). The
//!   cap is also kept below the process's open-file limit, so `accept` never
//!   fails with "Too many open files".
//! - **write timeout** ([`ConnectionLimits::write_timeout`]): a response write
//!   that makes no progress for this long (a client that stopped reading)
//!   closes the connection and frees the response.
//!
//! Only HTTP/1.1 is served (HTTP/2 without TLS is rare in front of a
//! service; a TLS-terminating proxy speaks HTTP/1.1 to it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// Default [`ConnectionLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`ConnectionLimits::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default [`ConnectionLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// File descriptors kept free for everything but client connections (the
/// store's pool, SQLite's files, the listener, logs).
const RESERVED_FILES: u64 = 128;
/// How long a shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The server's limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a request's head, and for the next request on a
    /// kept-alive connection (the idle timeout).
    pub header_read_timeout: Duration,
    /// Longest a response write may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// Most connections open at once; lowered at start to fit the process's
    /// open-file limit.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How many connections fit the open-file limit: the soft limit is raised to
/// the hard one when it is lower than `wanted` needs, then `wanted` is capped
/// at what is left after the descriptors kept for everything else (128).
pub fn fit_to_file_limit(wanted: usize) -> usize {
    let wanted = wanted.max(1);
    let needed = u64::try_from(wanted).unwrap_or(u64::MAX).saturating_add(RESERVED_FILES);
    let limit = match rlimit::increase_nofile_limit(needed) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit; keeping max connections at {wanted}");
            return wanted;
        }
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX).max(1);
    if fits < wanted {
        tracing::warn!(
            wanted,
            fits,
            open_file_limit = limit,
            "max connections lowered to fit the open-file limit (raise it with ulimit -n)"
        );
    }
    wanted.min(fits)
}

/// One open connection's bookkeeping.
#[derive(Debug)]
struct Slot {
    /// Requests being handled (not counting a response still being written).
    in_flight: AtomicUsize,
    /// When a request last started or finished, as nanoseconds since the registry's epoch.
    last_active: AtomicU64,
    /// Woken when the slot is taken by a newer connection.
    evicted: Notify,
}

/// The open connections.
#[derive(Debug)]
struct Registry {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    released: Notify,
}

/// A request in progress on a connection; the connection is busy until it drops.
struct InFlight {
    slot: Arc<Slot>,
    registry: Arc<Registry>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.last_active.store(self.registry.now(), Ordering::Relaxed);
        if self.slot.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A busy connection became evictable: an accept waiting for a slot may proceed.
            self.registry.released.notify_waiters();
        }
    }
}

impl Registry {
    fn new(max: usize) -> Self {
        Registry {
            max: max.max(1),
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
            released: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A slot for a new connection: a free one, or the one of the connection
    /// idle longest (which is told to close); `None` when all are busy.
    fn admit(&self) -> Option<(u64, Arc<Slot>)> {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slots.len() >= self.max {
            let victim = slots
                .iter()
                .filter(|(_, slot)| slot.in_flight.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, slot)| slot.last_active.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            if let Some(slot) = slots.remove(&victim) {
                slot.evicted.notify_one();
                metrics::counter!("eslab_http_connections_evicted_total").increment(1);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now()),
            evicted: Notify::new(),
        });
        slots.insert(id, slot.clone());
        metrics::gauge!("eslab_http_connections").set(u32::try_from(slots.len()).unwrap_or(u32::MAX));
        Some((id, slot))
    }

    fn release(&self, id: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.remove(&id);
        metrics::gauge!("eslab_http_connections").set(u32::try_from(slots.len()).unwrap_or(u32::MAX));
        drop(slots);
        self.released.notify_waiters();
    }

    fn begin(self: &Arc<Self>, slot: &Arc<Slot>) -> InFlight {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.last_active.store(self.now(), Ordering::Relaxed);
        InFlight { slot: slot.clone(), registry: self.clone() }
    }
}

/// Errors of `accept` that concern one connection only (the peer left before
/// it was accepted); anything else (e.g. out of file descriptors) is a reason
/// to pause.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted)
}

/// Serves `router` on `listener` within `limits` until `shutdown` turns
/// `true`; then stops accepting, lets open connections finish the request
/// they are in (up to a grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry::new(limits.max_connections));
    // Each connection task holds a receiver; `closed()` resolves when all are gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop_requested(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(error) => {
                // Logged at most once a second, then a pause: the condition
                // (e.g. no file descriptors left) does not clear by retrying at once.
                if last_accept_error.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::error!(%error, "accept failed; pausing");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, slot) = loop {
            if let Some(admitted) = registry.admit() {
                break admitted;
            }
            // Every connection is inside a request: wait for one to finish
            // (re-checked periodically in case the wake-up came before the wait).
            let released = registry.released.notified();
            tokio::select! {
                _ = released => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = stop_requested(&mut shutdown) => return drain(open_tx, open_rx).await,
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = connection_service(&router, peer, &registry, &slot);
        let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
        io.set_write_timeout(Some(limits.write_timeout));
        let registry = registry.clone();
        let mut stop = shutdown.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
            let mut connection = pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, %peer, "connection ended with an error");
                        }
                        break;
                    }
                    () = stop_requested(&mut stop), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    () = slot.evicted.notified() => {
                        tracing::debug!(%peer, "idle connection closed to make room for a new one");
                        break;
                    }
                }
            }
            registry.release(id);
            drop(open);
        });
    }
    drain(open_tx, open_rx).await
}

/// Resolves when `stop` turns `true` (or its sender is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Waits (bounded) until every connection task has ended.
async fn drain(open_tx: watch::Sender<()>, open_rx: watch::Receiver<()>) -> std::io::Result<()> {
    drop(open_rx);
    if tokio::time::timeout(SHUTDOWN_GRACE, open_tx.closed()).await.is_err() {
        tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after the shutdown began; leaving them");
    }
    Ok(())
}

/// The router as one connection's service: the peer's address as
/// [`ConnectInfo`] (the rate limit's key), and each request counted as in
/// flight on the connection's slot until its response is ready.
fn connection_service(
    router: &Router,
    peer: SocketAddr,
    registry: &Arc<Registry>,
    slot: &Arc<Slot>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let (router, registry, slot) = (router.clone(), registry.clone(), slot.clone());
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = registry.begin(&slot);
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(in_flight);
            response
        }
    })
}
