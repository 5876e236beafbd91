//! `CancelToken`: cancellation of a call from a foreign task. Kotlin needs none (a
//! cancelled coroutine frees its uniffi future, which drops the call); uniffi 0.32's
//! Swift futures ignore `Task` cancellation, so the Swift extras fire a token from
//! `withTaskCancellationHandler` instead. Firing drops the call's future at once: its
//! HTTP/1.1 connection is closed or its HTTP/2 stream reset, so the server sees the
//! client go, and the call fails with `Cancelled`.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{QuillError, Result};

/// Cancels the calls it is passed to (`cancel:` argument), now or later; idempotent.
#[derive(uniffi::Object)]
pub struct CancelToken(watch::Sender<bool>);

#[uniffi::export]
impl CancelToken {
    /// A token not yet fired.
    #[uniffi::constructor]
    fn new() -> Arc<Self> {
        Arc::new(CancelToken(watch::Sender::new(false)))
    }

    /// Fires the token: every call given it ends with `Cancelled`.
    fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether `cancel()` was called.
    fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs `call` until it ends or `token` fires (then the call's future is dropped).
pub(super) async fn unless_cancelled<T>(
    token: Option<Arc<CancelToken>>,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(token) = token else {
        return call.await;
    };
    let mut fired = token.0.subscribe();
    tokio::select! {
        biased;
        _ = fired.wait_for(|cancelled| *cancelled) => Err(QuillError::Cancelled {
            reason: "the call was cancelled".into(),
        }),
        result = call => result,
    }
}
