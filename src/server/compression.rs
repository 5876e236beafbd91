//! zstd in both directions (protocol.md §5): an incremental, size-capped decoder for
//! request bodies and a flushing stream encoder for streamed responses.

use std::io;

use bytes::Bytes;
use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

pub use crate::protocol::{COMPRESSION_LEVEL, COMPRESSION_THRESHOLD};

/// Decoded bytes handed out per step: bounds memory whatever the compression ratio.
const DECODE_CHUNK: usize = 128 * 1024;

/// Whether an `Accept-Encoding` value accepts zstd (a `zstd` coding without `q=0`).
pub fn accepts_zstd(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        if !coding.eq_ignore_ascii_case("zstd") {
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

/// Compresses a whole body (unary responses) at level 3.
pub fn compress(data: &[u8]) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(data, COMPRESSION_LEVEL)
}

/// Incremental zstd decoder: push compressed chunks, pull decoded chunks of at most
/// 128 KiB. Works without a content-size field; concatenated frames are accepted.
pub struct StreamDecoder {
    dec: Decoder<'static>,
    input: Bytes,
    pos: usize,
    buf: Vec<u8>,
    /// Inside a frame: the last step did not end on a frame boundary.
    frame_open: bool,
    /// The last step filled the output: the decoder may hold more output.
    maybe_more: bool,
}

impl StreamDecoder {
    pub fn new() -> io::Result<Self> {
        Ok(StreamDecoder {
            dec: Decoder::new()?,
            input: Bytes::new(),
            pos: 0,
            buf: vec![0; DECODE_CHUNK],
            frame_open: false,
            maybe_more: false,
        })
    }

    /// Adds compressed bytes; call only after [`Self::next_output`] returned `None`.
    pub fn push(&mut self, chunk: Bytes) {
        debug_assert!(self.pos >= self.input.len());
        self.input = chunk;
        self.pos = 0;
    }

    /// The next decoded chunk, `None` when more input is needed.
    pub fn next_output(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.pos >= self.input.len() && !self.maybe_more {
                return Ok(None);
            }
            let st = self
                .dec
                .run_on_buffers(&self.input[self.pos..], &mut self.buf)?;
            self.pos += st.bytes_read;
            if st.bytes_read > 0 || st.bytes_written > 0 {
                // A step without progress says nothing about frame boundaries.
                self.frame_open = st.remaining != 0;
            }
            self.maybe_more = st.bytes_written == self.buf.len();
            if st.bytes_written > 0 {
                return Ok(Some(Bytes::copy_from_slice(&self.buf[..st.bytes_written])));
            }
            if st.bytes_read == 0 {
                // No progress: wait for more input (a truncated frame is caught by finish).
                self.maybe_more = false;
                return Ok(None);
            }
        }
    }

    /// Call at the end of the body: an error if it stopped inside a zstd frame.
    pub fn finish(&self) -> io::Result<()> {
        if self.frame_open || self.pos < self.input.len() {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "zstd body ends inside a frame (truncated)",
            ))
        } else {
            Ok(())
        }
    }
}

/// Stream encoder: every chunk is compressed and flushed, so a streamed response
/// stays incremental; [`Self::finish`] closes the zstd frame.
pub struct StreamEncoder {
    enc: Encoder<'static>,
}

impl StreamEncoder {
    pub fn new() -> io::Result<Self> {
        Ok(StreamEncoder {
            enc: Encoder::new(COMPRESSION_LEVEL)?,
        })
    }

    fn spare(out: &mut Vec<u8>) {
        if out.capacity() - out.len() < 1024 {
            out.reserve(32 * 1024);
        }
    }

    /// Compresses `data` and flushes: the output decodes to everything given so far.
    pub fn compress_flush(&mut self, data: &[u8]) -> io::Result<Bytes> {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = InBuffer::around(data);
        while input.pos() < data.len() {
            Self::spare(&mut out);
            let pos = out.len();
            let mut ob = OutBuffer::around_pos(&mut out, pos);
            self.enc.run(&mut input, &mut ob)?;
        }
        loop {
            Self::spare(&mut out);
            let pos = out.len();
            let mut ob = OutBuffer::around_pos(&mut out, pos);
            if self.enc.flush(&mut ob)? == 0 {
                break;
            }
        }
        Ok(out.into())
    }

    /// Ends the zstd frame.
    pub fn finish(&mut self) -> io::Result<Bytes> {
        let mut out = Vec::with_capacity(64);
        loop {
            Self::spare(&mut out);
            let pos = out.len();
            let mut ob = OutBuffer::around_pos(&mut out, pos);
            if self.enc.finish(&mut ob, true)? == 0 {
                break;
            }
        }
        Ok(out.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_parsing() {
        assert!(accepts_zstd("zstd"));
        assert!(accepts_zstd("gzip, ZSTD;q=0.5"));
        assert!(!accepts_zstd("gzip, br"));
        assert!(!accepts_zstd("zstd;q=0"));
        assert!(!accepts_zstd("zstdx"));
    }

    #[test]
    fn stream_round_trip_in_small_pieces() {
        let mut enc = StreamEncoder::new().unwrap();
        let mut wire = Vec::new();
        for i in 0..50u32 {
            let chunk = vec![(i % 7) as u8; 10_000];
            let out = enc.compress_flush(&chunk).unwrap();
            assert!(!out.is_empty(), "each flush emits bytes");
            wire.extend_from_slice(&out);
        }
        wire.extend_from_slice(&enc.finish().unwrap());
        let mut dec = StreamDecoder::new().unwrap();
        let mut got = Vec::new();
        for piece in wire.chunks(37) {
            dec.push(Bytes::copy_from_slice(piece));
            while let Some(out) = dec.next_output().unwrap() {
                assert!(out.len() <= DECODE_CHUNK);
                got.extend_from_slice(&out);
            }
        }
        dec.finish().unwrap();
        assert_eq!(got.len(), 500_000);
        // A cut inside the frame is reported.
        let mut dec = StreamDecoder::new().unwrap();
        dec.push(Bytes::copy_from_slice(&wire[..wire.len() - 3]));
        while dec.next_output().unwrap().is_some() {}
        assert!(dec.finish().is_err());
    }
}
