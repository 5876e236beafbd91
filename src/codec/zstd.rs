//! zstd bodies (protocol.md §5): which codings a peer sent or accepts, compression, and
//! one incremental decoder for every decoded body — client responses and server
//! requests alike.
//!
//! The decoder is pulled in pieces of at most [`DECODE_CHUNK`] bytes, so a small
//! compressed chunk can never expand into a large allocation at once: the caller
//! consumes each piece (and can stop) before the next is produced. It stops with
//! [`QuillError::Protocol`] once its total output passes the limit it was given, which
//! is how a decompression bomb ends.
//!
//! ```
//! use bytes::Bytes;
//! use quill::codec::zstd::{compress, BodyDecoder, Coding};
//! let packed = compress(&[7u8; 5000]).unwrap();
//! let mut d = BodyDecoder::new(Coding::Zstd, None).unwrap();
//! d.push(Bytes::from(packed));
//! let mut out = Vec::new();
//! while let Some(piece) = d.next_output().unwrap() {
//!     out.extend_from_slice(&piece);
//! }
//! d.finish().unwrap();
//! assert_eq!(out, vec![7u8; 5000]);
//! ```

use bytes::Bytes;
use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

use crate::error::{QuillError, Result};
use crate::protocol::{COMPRESSION_LEVEL, COMPRESSION_THRESHOLD};

/// Largest piece of decoded output produced per pull.
pub const DECODE_CHUNK: usize = 64 * 1024;

/// The `Content-Encoding` token of zstd.
pub const ZSTD: &str = "zstd";

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Zstd,
}

/// The coding named by the `Content-Encoding` header values of a message. `identity`
/// and empty items are ignored; zstd twice or any other coding is an error (the caller
/// turns it into the status or error its side needs).
pub fn content_coding<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Coding> {
    let mut coding = Coding::Identity;
    for value in values {
        let value = std::str::from_utf8(value)
            .map_err(|_| QuillError::protocol("Content-Encoding header is not ASCII"))?;
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case(ZSTD) {
                if coding == Coding::Zstd {
                    return Err(QuillError::protocol(
                        "body is zstd-encoded twice; not supported",
                    ));
                }
                coding = Coding::Zstd;
            } else if !token.eq_ignore_ascii_case("identity") {
                return Err(QuillError::protocol(format!(
                    "unsupported Content-Encoding {token:?} (only zstd is understood)"
                )));
            }
        }
    }
    Ok(coding)
}

/// Whether an `Accept-Encoding` value accepts zstd (a `zstd` coding without `q=0`).
///
/// ```
/// use quill::codec::zstd::accepts_zstd;
/// assert!(accepts_zstd("gzip, ZSTD;q=0.5"));
/// assert!(!accepts_zstd("zstd;q=0"));
/// ```
pub fn accepts_zstd(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        if !coding.eq_ignore_ascii_case(ZSTD) {
            return false;
        }
        !parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

/// A whole body compressed at [`COMPRESSION_LEVEL`].
pub fn compress(data: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(data, COMPRESSION_LEVEL)
        .map_err(|e| QuillError::invalid(format!("could not zstd-compress the body: {e}")))
}

/// Compresses `body` when `enabled` and the body is at least [`COMPRESSION_THRESHOLD`]
/// bytes; returns the body to send and whether it is zstd.
pub fn compress_if_worth_it(body: Bytes, enabled: bool) -> Result<(Bytes, bool)> {
    if !enabled || body.len() < COMPRESSION_THRESHOLD {
        return Ok((body, false));
    }
    Ok((Bytes::from(compress(&body)?), true))
}

/// A cap on a decoder's total output and the setting that sets it (for the message).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub bytes: u64,
    pub setting: &'static str,
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

/// Incremental decoder of a body by its coding.
///
/// Usage: [`push`](Self::push) a received chunk, then call
/// [`next_output`](Self::next_output) until it returns `None`; at the end of the body,
/// [`finish`](Self::finish). Concatenated zstd frames decode as one body; an empty
/// body is an empty message; a body that stops inside a frame is truncated.
pub struct BodyDecoder {
    kind: Kind,
    total: u64,
    limit: Option<Limit>,
}

impl BodyDecoder {
    /// A decoder of `coding`. `limit` caps the total decoded size; `None` leaves the
    /// cap to the caller (streams cap each message instead).
    pub fn new(coding: Coding, limit: Option<Limit>) -> Result<BodyDecoder> {
        let kind = match coding {
            Coding::Identity => Kind::Identity { pending: None },
            Coding::Zstd => {
                let decoder = Decoder::new().map_err(|e| {
                    QuillError::protocol(format!("could not create a zstd decoder: {e}"))
                })?;
                Kind::Zstd(Box::new(ZstdState {
                    decoder,
                    input: Bytes::new(),
                    pos: 0,
                    maybe_more: false,
                    frame_complete: false,
                    seen_input: false,
                }))
            }
        };
        Ok(BodyDecoder {
            kind,
            total: 0,
            limit,
        })
    }

    /// Whether one pushed chunk can decode to more output than it holds (zstd): a reader
    /// must then yield between pieces, as one small chunk may expand without bound.
    /// Identity output is the received chunk itself, already paced by the network.
    pub fn inflates(&self) -> bool {
        matches!(self.kind, Kind::Zstd(_))
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
                if self.total > limit.bytes {
                    return Err(QuillError::protocol(format!(
                        "decoded body exceeds the {}-byte limit ({})",
                        limit.bytes, limit.setting
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Whether the output passed the limit (what the last error of `next_output` was).
    pub fn over_limit(&self) -> bool {
        self.limit.as_ref().is_some_and(|l| self.total > l.bytes)
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
                if z.seen_input && (!z.frame_complete || z.pos < z.input.len()) {
                    return Err(QuillError::protocol(
                        "zstd body is truncated (it ends inside a frame)",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Decoded bytes produced so far.
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
                .map_err(|e| QuillError::protocol(format!("invalid zstd body: {e}")))?;
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

/// Stream encoder: every chunk is compressed and flushed, so a streamed body stays
/// incremental; [`finish`](Self::finish) closes the zstd frame.
pub struct StreamEncoder {
    enc: Encoder<'static>,
}

impl StreamEncoder {
    pub fn new() -> Result<Self> {
        let enc = Encoder::new(COMPRESSION_LEVEL)
            .map_err(|e| QuillError::protocol(format!("could not create a zstd encoder: {e}")))?;
        Ok(StreamEncoder { enc })
    }

    fn spare(out: &mut Vec<u8>) {
        if out.capacity() - out.len() < 1024 {
            out.reserve(32 * 1024);
        }
    }

    fn encode_error(e: std::io::Error) -> QuillError {
        QuillError::protocol(format!("zstd encoding failed: {e}"))
    }

    /// Compresses `data` and flushes: the output decodes to everything given so far.
    pub fn compress_flush(&mut self, data: &[u8]) -> Result<Bytes> {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = InBuffer::around(data);
        while input.pos() < data.len() {
            Self::spare(&mut out);
            let pos = out.len();
            let mut ob = OutBuffer::around_pos(&mut out, pos);
            self.enc
                .run(&mut input, &mut ob)
                .map_err(Self::encode_error)?;
        }
        loop {
            Self::spare(&mut out);
            let pos = out.len();
            let mut ob = OutBuffer::around_pos(&mut out, pos);
            if self.enc.flush(&mut ob).map_err(Self::encode_error)? == 0 {
                break;
            }
        }
        Ok(out.into())
    }

    /// Ends the zstd frame.
    pub fn finish(&mut self) -> Result<Bytes> {
        let mut out = Vec::with_capacity(64);
        loop {
            Self::spare(&mut out);
            let pos = out.len();
            let mut ob = OutBuffer::around_pos(&mut out, pos);
            if self.enc.finish(&mut ob, true).map_err(Self::encode_error)? == 0 {
                break;
            }
        }
        Ok(out.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn zstd() -> BodyDecoder {
        BodyDecoder::new(Coding::Zstd, None).unwrap()
    }

    #[test]
    fn output_ending_on_a_chunk_boundary_is_complete() {
        // 16 × DECODE_CHUNK of highly compressible data: the last run fills the buffer
        // exactly, and the body must still count as complete.
        let plain: Vec<u8> = (0..16 * DECODE_CHUNK).map(|i| (i % 256) as u8).collect();
        let packed = compress(&plain).unwrap();
        assert_eq!(decode_all(&mut zstd(), &packed, usize::MAX).unwrap(), plain);
    }

    #[test]
    fn request_threshold() {
        let small = Bytes::from(vec![b'a'; COMPRESSION_THRESHOLD - 1]);
        assert_eq!(
            compress_if_worth_it(small.clone(), true).unwrap(),
            (small, false)
        );
        let big = Bytes::from(vec![b'a'; COMPRESSION_THRESHOLD]);
        assert_eq!(
            compress_if_worth_it(big.clone(), false).unwrap(),
            (big.clone(), false)
        );
        let (enc, zstd) = compress_if_worth_it(big.clone(), true).unwrap();
        assert!(zstd && enc.len() < big.len());
        assert_eq!(zstd::bulk::decompress(&enc, 1 << 20).unwrap(), big);
    }

    #[test]
    fn round_trip_any_chunking() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let enc = compress(&data).unwrap();
        // Two concatenated frames decode as one body.
        let mut two = enc.clone();
        two.extend_from_slice(&enc);
        let limit = Some(Limit {
            bytes: 1 << 30,
            setting: "test",
        });
        for cut in [1, 7, 4096, usize::MAX] {
            let mut d = BodyDecoder::new(Coding::Zstd, limit).unwrap();
            assert_eq!(decode_all(&mut d, &enc, cut).unwrap(), data, "cut {cut}");
            assert_eq!(
                decode_all(&mut zstd(), &two, cut).unwrap().len(),
                2 * data.len()
            );
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
        let limit = Limit {
            bytes: 1 << 20,
            setting: "max_decoded_size",
        };
        let mut d = BodyDecoder::new(Coding::Zstd, Some(limit)).unwrap();
        let e = decode_all(&mut d, &bomb, 1 << 16).unwrap_err();
        assert!(matches!(e, QuillError::Protocol { .. }), "{e}");
        assert!(e.to_string().contains("max_decoded_size"), "{e}");
        // Output is never produced far past the limit.
        assert!(d.total() <= (1 << 20) + DECODE_CHUNK as u64);
    }

    #[test]
    fn truncated_and_invalid_zstd() {
        let enc = compress(&[7u8; 5000]).unwrap();
        for cut in [1, 3, enc.len() / 2] {
            let e = decode_all(&mut zstd(), &enc[..enc.len() - cut], 100).unwrap_err();
            assert!(e.to_string().contains("truncated"), "{e}");
        }
        assert!(matches!(
            decode_all(&mut zstd(), b"not zstd at all", 4),
            Err(QuillError::Protocol { .. })
        ));
        // An empty body is an empty message.
        assert_eq!(decode_all(&mut zstd(), b"", 4).unwrap(), b"");
    }

    #[test]
    fn identity_limit() {
        let limit = Some(Limit {
            bytes: 10,
            setting: "max_decoded_size",
        });
        let mut d = BodyDecoder::new(Coding::Identity, limit).unwrap();
        assert_eq!(decode_all(&mut d, b"0123456789", 3).unwrap(), b"0123456789");
        let mut d = BodyDecoder::new(Coding::Identity, limit).unwrap();
        assert!(matches!(
            decode_all(&mut d, b"0123456789a", 3),
            Err(QuillError::Protocol { .. })
        ));
    }

    #[test]
    fn codings() {
        let parse = |values: &[&str]| content_coding(values.iter().map(|v| v.as_bytes()));
        assert_eq!(parse(&[]).unwrap(), Coding::Identity);
        assert_eq!(parse(&["Identity"]).unwrap(), Coding::Identity);
        assert_eq!(parse(&["zstd"]).unwrap(), Coding::Zstd);
        assert_eq!(parse(&["identity, ZSTD", ""]).unwrap(), Coding::Zstd);
        assert!(parse(&["gzip"]).unwrap_err().to_string().contains("gzip"));
        assert!(matches!(
            parse(&["zstd, zstd"]),
            Err(QuillError::Protocol { .. })
        ));
        assert!(matches!(
            parse(&["zstd", "zstd"]),
            Err(QuillError::Protocol { .. })
        ));
        assert!(matches!(
            content_coding([&b"\xff"[..]]),
            Err(QuillError::Protocol { .. })
        ));
        assert!(accepts_zstd("zstd"));
        assert!(accepts_zstd("gzip, ZSTD;q=0.5"));
        assert!(!accepts_zstd("gzip, br"));
        assert!(!accepts_zstd("zstd;q=0"));
        assert!(!accepts_zstd("zstdx"));
    }

    #[test]
    fn stream_encoder_round_trip_in_small_pieces() {
        let mut enc = StreamEncoder::new().unwrap();
        let mut wire = Vec::new();
        for i in 0..50u32 {
            let chunk = vec![(i % 7) as u8; 10_000];
            let out = enc.compress_flush(&chunk).unwrap();
            assert!(!out.is_empty(), "each flush emits bytes");
            wire.extend_from_slice(&out);
        }
        wire.extend_from_slice(&enc.finish().unwrap());
        assert_eq!(decode_all(&mut zstd(), &wire, 37).unwrap().len(), 500_000);
        let e = decode_all(&mut zstd(), &wire[..wire.len() - 3], 37).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
