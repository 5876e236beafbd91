//! What a client has learned about its server from the responses it got, so that it
//! only sends what the server has shown it understands.
//!
//! Existing Quill servers do not decode zstd request bodies (they answer 500), and
//! nothing in a request can ask. So with compression enabled the client always offers
//! `Accept-Encoding: zstd` for responses, but compresses request bodies only after a
//! response of this server carried `Accept-Encoding: zstd` itself (RFC 9110 §12.5.3
//! lets a server say so; the bundled server always does). A server that never says it
//! never receives a compressed body.
//!
//! A server may also name the transport profile it chose (`Selected-Prism`, optional):
//! the last one named is kept for the client to show.

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING};

use crate::codec::zstd::accepts_zstd;
use crate::protocol::SELECTED_PRISM_HEADER;

/// Shared by a client and every call it runs.
#[derive(Debug, Default)]
pub(crate) struct ServerCodings {
    zstd: AtomicBool,
    /// Lock-free: it crosses a fork (`fork.rs`).
    prism: ArcSwapOption<HeaderValue>,
}

impl ServerCodings {
    /// Notes what the headers of one response (any status) say the server decodes and
    /// which profile it chose.
    pub fn learn(&self, headers: &HeaderMap) {
        if let Some(named) = headers.get(SELECTED_PRISM_HEADER) {
            if self.prism.load().as_deref() != Some(named) {
                self.prism.store(Some(std::sync::Arc::new(named.clone())));
            }
        }
        if !self.zstd.load(Ordering::Relaxed)
            && headers
                .get_all(ACCEPT_ENCODING)
                .iter()
                .any(|v| v.to_str().is_ok_and(accepts_zstd))
        {
            self.zstd.store(true, Ordering::Relaxed);
        }
    }

    /// The profile the server last named in `Selected-Prism` (trimmed, lower case), if
    /// any response has carried one that is text.
    pub fn selected_prism(&self) -> Option<String> {
        let prism = self.prism.load_full()?;
        let text = prism.to_str().ok()?.trim();
        (!text.is_empty()).then(|| text.to_ascii_lowercase())
    }

    /// Whether a response has shown that the server decodes zstd request bodies.
    pub fn decodes_zstd(&self) -> bool {
        self.zstd.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn only_an_accepting_header_teaches_zstd() {
        let codings = ServerCodings::default();
        let mut h = HeaderMap::new();
        codings.learn(&h);
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, zstd;q=0"));
        codings.learn(&h);
        assert!(!codings.decodes_zstd());
        h.append(ACCEPT_ENCODING, HeaderValue::from_static("br, ZSTD"));
        codings.learn(&h);
        assert!(codings.decodes_zstd());
        codings.learn(&HeaderMap::new()); // once learned, kept
        assert!(codings.decodes_zstd());
    }

    #[test]
    fn the_last_named_profile_is_kept() {
        let codings = ServerCodings::default();
        assert_eq!(codings.selected_prism(), None);
        let mut h = HeaderMap::new();
        h.insert(SELECTED_PRISM_HEADER, HeaderValue::from_static(" Turbo "));
        codings.learn(&h);
        assert_eq!(codings.selected_prism().as_deref(), Some("turbo"));
        codings.learn(&HeaderMap::new()); // absent: nothing changes
        assert_eq!(codings.selected_prism().as_deref(), Some("turbo"));
        h.insert(
            SELECTED_PRISM_HEADER,
            HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        codings.learn(&h);
        assert_eq!(codings.selected_prism(), None); // not text: not shown
    }
}
