//! Closing a client: one signal every call of the client watches.
//!
//! A call in flight when its client is closed must end at once, with
//! [`QuillError::Cancelled`], on whichever thread or executor waits for it: a blocking
//! caller driving its own lane, a task on the workers, a stream's reader task. Each
//! call holds a [`Closed`] (a watch receiver) and races its work against it, so closing
//! needs no list of calls and costs a call nothing until it fires.

use tokio::sync::watch;

use crate::error::QuillError;

/// The closing end, owned by the client's runtime.
pub(crate) struct Closer {
    tx: watch::Sender<bool>,
}

/// What a call watches; cheap to clone.
#[derive(Clone)]
pub(crate) struct Closed(watch::Receiver<bool>);

impl Closer {
    pub fn new() -> Closer {
        Closer {
            tx: watch::Sender::new(false),
        }
    }

    /// Fires the signal; whether this call closed it (false when already closed).
    pub fn close(&self) -> bool {
        !self.tx.send_replace(true)
    }

    pub fn is_closed(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn watch(&self) -> Closed {
        Closed(self.tx.subscribe())
    }
}

impl Closed {
    /// Resolves once the client is closed (at once if it already is).
    pub async fn fired(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone, which only happens with the client: a
        // call that outlives it is then over as well.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Whether the client is closed now.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// `result`, unless it is an error and the client has been closed: closing breaks
    /// connections at once (an HTTP/3 endpoint closes with the client), and the call
    /// then reports the close, not the broken connection it caused.
    pub fn or_closed<T>(
        &self,
        path: &str,
        result: crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        match result {
            Err(_) if self.is_fired() => Err(closed_error(path)),
            other => other,
        }
    }
}

/// The error of a call on a closed client, or of one that was running when it closed.
pub(crate) fn closed_error(path: &str) -> QuillError {
    QuillError::Cancelled {
        reason: format!("call to {path} cancelled: the client is closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn fires_once_for_every_watcher() {
        let closer = Closer::new();
        let a = closer.watch();
        let b = a.clone();
        let waiting = tokio::spawn(async move { b.fired().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(closer.close());
        assert!(!closer.close(), "closing twice is a no-op");
        waiting.await.unwrap();
        a.fired().await; // already closed: resolves at once
        closer.watch().fired().await;
        assert!(closer.is_closed());
    }
}
