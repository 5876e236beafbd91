//! What a client has learned about its server from the responses it got, so that it
//! only sends what the server has shown it understands.
//!
//! Existing Quill servers do not decode zstd request bodies (they answer 500), and
//! nothing in a request can ask. So with compression enabled the client always offers
//! `Accept-Encoding: zstd` for responses, but compresses request bodies only after a
//! response of this server carried `Accept-Encoding: zstd` itself (RFC 9110 §12.5.3
//! lets a server say so; the bundled server always does). A server that never says it
//! never receives a compressed body.

use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::header::{HeaderMap, ACCEPT_ENCODING};

use crate::codec::zstd::accepts_zstd;

/// Shared by a client and every call it runs.
#[derive(Debug, Default)]
pub(crate) struct ServerCodings {
    zstd: AtomicBool,
}

impl ServerCodings {
    /// Notes what the headers of one response (any status) say the server decodes.
    pub fn learn(&self, headers: &HeaderMap) {
        if !self.zstd.load(Ordering::Relaxed)
            && headers
                .get_all(ACCEPT_ENCODING)
                .iter()
                .any(|v| v.to_str().is_ok_and(accepts_zstd))
        {
            self.zstd.store(true, Ordering::Relaxed);
        }
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
}
