//! The client's side of body coding: which decoder a response needs, and gathering its
//! decoded pieces. The codec itself is [`crate::codec::zstd`], shared with the server.

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_ENCODING};

pub(crate) use crate::codec::zstd::{compress_if_worth_it as encode_request, ZSTD};
use crate::codec::zstd::{content_coding, BodyDecoder, Limit};
use crate::error::Result;

/// The decoder of a response with these headers. `limit` caps the total decoded size
/// (the client's `max_decoded_size`); `None` leaves the cap to the caller (streams cap
/// each message instead).
pub(crate) fn decoder_for(headers: &HeaderMap, limit: Option<u64>) -> Result<BodyDecoder> {
    let coding = content_coding(
        headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
    )?;
    let limit = limit.map(|bytes| Limit {
        bytes,
        setting: "max_decoded_size",
    });
    BodyDecoder::new(coding, limit)
}

/// Gathers decoded pieces into one buffer, keeping a single piece as-is (no copy).
#[derive(Default)]
pub(crate) struct Collector {
    first: Option<Bytes>,
    rest: Vec<u8>,
    hint: usize,
}

impl Collector {
    /// `hint`: the expected total size (e.g. Content-Length), reserved once a second
    /// piece shows that copying is needed.
    pub fn with_hint(hint: usize) -> Collector {
        Collector {
            hint,
            ..Collector::default()
        }
    }

    pub fn push(&mut self, piece: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(piece);
            return;
        }
        if let Some(first) = self.first.take() {
            self.rest.reserve(self.hint.max(first.len() + piece.len()));
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&piece);
    }

    pub fn finish(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => Bytes::from(self.rest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_follows_the_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, "gzip".parse().unwrap());
        let e = decoder_for(&h, None).err().unwrap();
        assert!(e.to_string().contains("gzip"), "{e}");
        h.insert(CONTENT_ENCODING, "zstd".parse().unwrap());
        let mut d = decoder_for(&h, Some(3)).unwrap();
        d.push(Bytes::from(crate::codec::zstd::compress(b"abcd").unwrap()));
        let e = d.next_output().unwrap_err().to_string();
        assert!(e.contains("max_decoded_size"), "{e}");
    }

    #[test]
    fn collector_keeps_single_piece() {
        let one = Bytes::from_static(b"abc");
        let mut c = Collector::default();
        c.push(one.clone());
        assert_eq!(c.finish().as_ptr(), one.as_ptr());
        let mut c = Collector::with_hint(8);
        c.push(Bytes::from_static(b"ab"));
        c.push(Bytes::from_static(b"cd"));
        c.push(Bytes::from_static(b"e"));
        assert_eq!(&c.finish()[..], b"abcde");
    }
}
