//! zstd for request bodies and `Content-Encoding` decoding of response bodies
//! (protocol.md §5).
//!
//! Responses are decoded incrementally and pulled in pieces of at most
//! [`DECODE_CHUNK`] bytes, so a small compressed chunk can never expand into a large
//! allocation at once: the caller consumes each piece (and can stop) before the next is
//! produced. The decoder itself stops with [`QuillError::Protocol`] once its total
//! output passes the limit it was given, which is how a decompression bomb ends.

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_ENCODING};
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use crate::error::{QuillError, Result};
use crate::protocol::{COMPRESSION_LEVEL, COMPRESSION_THRESHOLD};

/// Largest piece of decoded output produced per pull.
pub(crate) const DECODE_CHUNK: usize = 64 * 1024;

/// The `Content-Encoding` token of zstd.
pub(crate) const ZSTD: &str = "zstd";

/// Compresses `body` when compression is on and the body is at least
/// [`COMPRESSION_THRESHOLD`] bytes; returns the body to send and whether it is zstd.
pub(crate) fn encode_request(body: Bytes, enabled: bool) -> Result<(Bytes, bool)> {
    if !enabled || body.len() < COMPRESSION_THRESHOLD {
        return Ok((body, false));
    }
    let compressed = zstd::bulk::compress(&body, COMPRESSION_LEVEL).map_err(|e| {
        QuillError::invalid(format!("could not zstd-compress the request body: {e}"))
    })?;
    Ok((Bytes::from(compressed), true))
}

enum Kind {
    Identity { pending: Option<Bytes> },
    Zstd(Box<ZstdState>),
}

struct ZstdState {
    decoder: Decoder<'static>,
    input: Bytes,
    pos: usize,
    /// The last step filled the output buffer, so zstd may hold more output even with
    /// no input left.
    maybe_more: bool,
    /// zstd reported a complete frame and no input followed it.
    frame_complete: bool,
    seen_input: bool,
}

/// Incremental decoder of a response body by its `Content-Encoding`.
///
/// Usage: [`push`](Self::push) a received chunk, then call
/// [`next_output`](Self::next_output) until it returns `None`; at the end of the body,
/// [`finish`](Self::finish).
pub(crate) struct BodyDecoder {
    kind: Kind,
    total: u64,
    limit: Option<u64>,
}

impl BodyDecoder {
    /// A decoder for a response with these headers. `limit` caps the total decoded
    /// size; `None` leaves the cap to the caller (streams cap per message instead).
    pub fn for_headers(headers: &HeaderMap, limit: Option<u64>) -> Result<BodyDecoder> {
        let mut zstd = false;
        for value in headers.get_all(CONTENT_ENCODING) {
            let value = value
                .to_str()
                .map_err(|_| QuillError::protocol("Content-Encoding header is not ASCII"))?;
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case(ZSTD) {
                    if zstd {
                        return Err(QuillError::protocol(
                            "response is zstd-encoded twice; not supported",
                        ));
                    }
                    zstd = true;
                } else if !token.eq_ignore_ascii_case("identity") {
                    return Err(QuillError::protocol(format!(
                        "unsupported response Content-Encoding {token:?} (only zstd is understood)"
                    )));
                }
            }
        }
        if zstd {
            Self::zstd(limit)
        } else {
            Ok(Self::identity(limit))
        }
    }

    pub fn identity(limit: Option<u64>) -> BodyDecoder {
        BodyDecoder {
            kind: Kind::Identity { pending: None },
            total: 0,
            limit,
        }
    }

    pub fn zstd(limit: Option<u64>) -> Result<BodyDecoder> {
        let decoder = Decoder::new()
            .map_err(|e| QuillError::protocol(format!("could not create a zstd decoder: {e}")))?;
        Ok(BodyDecoder {
            kind: Kind::Zstd(Box::new(ZstdState {
                decoder,
                input: Bytes::new(),
                pos: 0,
                maybe_more: false,
                frame_complete: false,
                seen_input: false,
            })),
            total: 0,
            limit,
        })
    }

    /// Hands the decoder the next received chunk. The previous chunk must have been
    /// drained with `next_output` first.
    pub fn push(&mut self, chunk: Bytes) {
        match &mut self.kind {
            Kind::Identity { pending } => {
                debug_assert!(
                    pending.is_none(),
                    "push before the previous chunk was drained"
                );
                if !chunk.is_empty() {
                    *pending = Some(chunk);
                }
            }
            Kind::Zstd(z) => {
                debug_assert!(
                    z.pos >= z.input.len(),
                    "push before the previous chunk was drained"
                );
                if !chunk.is_empty() {
                    z.seen_input = true;
                    z.frame_complete = false;
                }
                z.input = chunk;
                z.pos = 0;
            }
        }
    }

    /// The next piece of decoded output, `None` when the decoder needs more input.
    pub fn next_output(&mut self) -> Result<Option<Bytes>> {
        let out = match &mut self.kind {
            Kind::Identity { pending } => pending.take(),
            Kind::Zstd(z) => z.step()?,
        };
        if let Some(piece) = &out {
            self.total += piece.len() as u64;
            if let Some(limit) = self.limit {
                if self.total > limit {
                    return Err(QuillError::protocol(format!(
                        "decoded response body exceeds the {limit}-byte limit (max_decoded_size)"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Call at the end of the body: a zstd body that stops inside a frame is an error.
    pub fn finish(&mut self) -> Result<()> {
        match &mut self.kind {
            Kind::Identity { .. } => Ok(()),
            Kind::Zstd(z) => {
                if z.maybe_more {
                    return Err(QuillError::protocol(
                        "zstd body ended with undrained output (decoder misuse)",
                    ));
                }
                // An empty body has no frame at all; tolerate it as an empty message.
                if z.seen_input && !z.frame_complete {
                    return Err(QuillError::protocol(
                        "zstd response body is truncated (incomplete frame)",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Decoded bytes produced so far.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl ZstdState {
    fn step(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.pos >= self.input.len() && !self.maybe_more {
                return Ok(None);
            }
            let mut buf = vec![0u8; DECODE_CHUNK];
            let mut input = InBuffer::around(&self.input[self.pos..]);
            let mut output = OutBuffer::around(&mut buf[..]);
            let hint = self
                .decoder
                .run(&mut input, &mut output)
                .map_err(|e| QuillError::protocol(format!("invalid zstd response body: {e}")))?;
            let (read, written) = (input.pos(), output.pos());
            self.pos += read;
            // hint 0 means the frame is decoded and fully flushed. Once that is seen, a
            // further run on empty input reports the header size of a *next* frame, so
            // completion must not be re-derived from that later hint: when the output
            // ended exactly on a DECODE_CHUNK boundary that re-derivation wrongly called
            // a complete body truncated.
            self.maybe_more = written == DECODE_CHUNK && hint != 0;
            if hint == 0 {
                self.frame_complete = true;
            } else if read > 0 || written > 0 {
                self.frame_complete = false;
            }
            if written > 0 {
                buf.truncate(written);
                return Ok(Some(Bytes::from(buf)));
            }
            if read == 0 {
                // Neither input consumed nor output produced: zstd needs more input.
                return Ok(None);
            }
        }
    }
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
    fn output_ending_on_a_chunk_boundary_is_complete() {
        // 16 × DECODE_CHUNK of highly compressible data: the last run fills the buffer
        // exactly, and the body must still count as complete.
        let plain: Vec<u8> = (0..16 * DECODE_CHUNK).map(|i| (i % 256) as u8).collect();
        let packed = zstd::bulk::compress(&plain, 3).unwrap();
        let mut d = BodyDecoder::zstd(None).unwrap();
        d.push(Bytes::from(packed));
        let mut out = Vec::new();
        while let Some(piece) = d.next_output().unwrap() {
            out.extend_from_slice(&piece);
        }
        d.finish().unwrap();
        assert_eq!(out, plain);
    }

    fn decode_all(dec: &mut BodyDecoder, body: &[u8], cut: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in body.chunks(cut.max(1)) {
            dec.push(Bytes::copy_from_slice(chunk));
            while let Some(piece) = dec.next_output()? {
                assert!(piece.len() <= DECODE_CHUNK);
                out.extend_from_slice(&piece);
            }
        }
        dec.finish()?;
        Ok(out)
    }

    fn zstd_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, "zstd".parse().unwrap());
        h
    }

    #[test]
    fn request_threshold() {
        let small = Bytes::from(vec![b'a'; COMPRESSION_THRESHOLD - 1]);
        assert_eq!(encode_request(small.clone(), true).unwrap(), (small, false));
        let big = Bytes::from(vec![b'a'; COMPRESSION_THRESHOLD]);
        assert_eq!(
            encode_request(big.clone(), false).unwrap(),
            (big.clone(), false)
        );
        let (enc, zstd) = encode_request(big.clone(), true).unwrap();
        assert!(zstd && enc.len() < big.len());
        assert_eq!(zstd::bulk::decompress(&enc, 1 << 20).unwrap(), big);
    }

    #[test]
    fn round_trip_any_chunking() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (enc, _) = encode_request(Bytes::from(data.clone()), true).unwrap();
        // Two concatenated frames decode as one body.
        let mut two = enc.to_vec();
        two.extend_from_slice(&enc);
        for cut in [1, 7, 4096, usize::MAX] {
            let mut d = BodyDecoder::for_headers(&zstd_headers(), Some(1 << 30)).unwrap();
            assert_eq!(decode_all(&mut d, &enc, cut).unwrap(), data, "cut {cut}");
            let mut d = BodyDecoder::for_headers(&zstd_headers(), None).unwrap();
            assert_eq!(decode_all(&mut d, &two, cut).unwrap().len(), 2 * data.len());
        }
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        // 256 MiB of zeros compresses to a few KiB.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut d = BodyDecoder::zstd(Some(1 << 20)).unwrap();
        let e = decode_all(&mut d, &bomb, 1 << 16).unwrap_err();
        assert!(matches!(e, QuillError::Protocol { .. }), "{e}");
        assert!(e.to_string().contains("max_decoded_size"), "{e}");
        // Output is never produced far past the limit.
        assert!(d.total() <= (1 << 20) + DECODE_CHUNK as u64);
    }

    #[test]
    fn truncated_and_invalid_zstd() {
        let (enc, _) = encode_request(Bytes::from(vec![7u8; 5000]), true).unwrap();
        let mut d = BodyDecoder::zstd(None).unwrap();
        let e = decode_all(&mut d, &enc[..enc.len() - 3], 100).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut d = BodyDecoder::zstd(None).unwrap();
        assert!(matches!(
            decode_all(&mut d, b"not zstd at all", 4),
            Err(QuillError::Protocol { .. })
        ));
        // An empty body is an empty message.
        let mut d = BodyDecoder::zstd(None).unwrap();
        assert_eq!(decode_all(&mut d, b"", 4).unwrap(), b"");
    }

    #[test]
    fn identity_limit_and_unknown_encodings() {
        let mut d = BodyDecoder::for_headers(&HeaderMap::new(), Some(10)).unwrap();
        assert_eq!(decode_all(&mut d, b"0123456789", 3).unwrap(), b"0123456789");
        let mut d = BodyDecoder::identity(Some(10));
        assert!(matches!(
            decode_all(&mut d, b"0123456789a", 3),
            Err(QuillError::Protocol { .. })
        ));
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, "gzip".parse().unwrap());
        let e = BodyDecoder::for_headers(&h, None).err().unwrap();
        assert!(e.to_string().contains("gzip"), "{e}");
        h.insert(CONTENT_ENCODING, "Identity".parse().unwrap());
        assert!(BodyDecoder::for_headers(&h, None).is_ok());
        h.insert(CONTENT_ENCODING, "zstd, zstd".parse().unwrap());
        assert!(BodyDecoder::for_headers(&h, None).is_err());
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
