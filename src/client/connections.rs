//! Connection events: [`ConnectEvents`], a layer around the pool's connector that
//! reports each connection it opens, and [`SeenConnections`], which tells a call
//! whether its connection served an earlier call.
//!
//! The pool only asks its connector for a connection it does not have, so every pass
//! through the layer is a new connection. Reuse is known from the other end: the
//! response of a call says which local address it came on, and an address this client
//! saw before is a pooled connection (best effort: the system could hand a new
//! connection the port of one closed long ago, which is reported as reused).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Instant;

use tower_layer::Layer;
use tower_service::Service;

use super::events::{self, EventKind, Level};

/// Reports `ConnectionOpened` (debug) for each connection the wrapped connector makes
/// to `peer`, with the time it took (TCP and TLS).
#[derive(Clone)]
pub(crate) struct ConnectEvents {
    pub peer: String,
}

impl<S> Layer<S> for ConnectEvents {
    type Service = Connector<S>;

    fn layer(&self, inner: S) -> Connector<S> {
        Connector {
            inner,
            peer: self.peer.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Connector<S> {
    inner: S,
    peer: String,
}

type Connecting<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, Req> Service<Req> for Connector<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Connecting<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let connecting = self.inner.call(req);
        if !events::enabled(Level::Debug) {
            return Box::pin(connecting);
        }
        let peer = self.peer.clone();
        let start = Instant::now();
        // The pool may finish the connection on a task of its own: the event is still
        // the caller's whose call asked for it (called here, in that call's task).
        let caller = events::current_caller();
        Box::pin(async move {
            let result = connecting.await;
            if result.is_ok() {
                events::emit(Level::Debug, EventKind::ConnectionOpened, |e| {
                    e.caller = caller;
                    e.elapsed = start.elapsed();
                    e.message = format!(
                        "connection to {peer} opened in {}",
                        events::millis(e.elapsed)
                    );
                    e.target = peer;
                });
            }
            result
        })
    }
}

/// How many local addresses a client remembers: more than its pools hold at once.
const REMEMBERED: usize = 64;

/// The local addresses of the client's recent connections.
#[derive(Default)]
pub(crate) struct SeenConnections(Mutex<VecDeque<SocketAddr>>);

impl SeenConnections {
    /// Whether a call came on `local` before; remembers it.
    pub fn seen_before(&self, local: SocketAddr) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&local) {
            return true;
        }
        if seen.len() == REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(local);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_number_of_addresses() {
        let seen = SeenConnections::default();
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert!(!seen.seen_before(addr(1)));
        assert!(seen.seen_before(addr(1)));
        for port in 2..=REMEMBERED as u16 + 1 {
            assert!(!seen.seen_before(addr(port)));
        }
        assert!(!seen.seen_before(addr(1)), "the oldest was forgotten");
    }
}
