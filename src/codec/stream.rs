//! Varint stream frames (protocol.md §3): `[len: LEB128][flags: u8][payload]`.
//!
//! [`FrameDecoder`] is incremental: feed it chunks of any size as they arrive and pull
//! complete frames out; it never buffers more than one frame plus one chunk.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{QuillError, Result};
use crate::protocol::{flags, MAX_FRAME_PAYLOAD, MAX_VARINT_LEN};

/// One stream frame as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: u8,
    pub payload: Bytes,
}

/// Appends the LEB128 encoding of `v` to `out`.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a LEB128 varint from the front of `buf`: `Ok(None)` if more bytes are needed,
/// `Ok(Some((value, used)))` otherwise. Longer than 10 bytes, or above `u64::MAX`, is an error.
pub fn read_varint(buf: &[u8]) -> Result<Option<(u64, usize)>> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let part = (b & 0x7f) as u64;
        if i == MAX_VARINT_LEN - 1 && (b & 0x80 != 0 || part > 1) {
            return Err(QuillError::protocol(
                "varint longer than 10 bytes or above 2^64-1",
            ));
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Ok(None)
}

/// The frame header (varint length + flags) for a payload of `len` bytes.
pub fn frame_header(flags: u8, len: usize) -> Result<Vec<u8>> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(QuillError::invalid(format!(
            "message of {len} bytes is larger than the {MAX_FRAME_PAYLOAD}-byte frame limit"
        )));
    }
    let mut out = Vec::with_capacity(MAX_VARINT_LEN + 1);
    put_varint(&mut out, len as u64);
    out.push(flags);
    Ok(out)
}

/// Encodes one frame.
///
/// ```
/// use quill::codec::stream::{encode_frame, END_STREAM_FRAME};
/// assert_eq!(encode_frame(0x01, b"hi").unwrap(), [0x02, 0x01, b'h', b'i']);
/// assert_eq!(END_STREAM_FRAME, [0x00, 0x02]);
/// ```
pub fn encode_frame(flags: u8, payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = frame_header(flags, payload.len())?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// Encodes one DATA frame.
pub fn encode_data(payload: &[u8]) -> Result<Vec<u8>> {
    encode_frame(flags::DATA, payload)
}

/// The END_STREAM frame, always sent as its own empty frame.
pub const END_STREAM_FRAME: [u8; 2] = [0x00, flags::END_STREAM];
/// The CANCEL frame.
pub const CANCEL_FRAME: [u8; 2] = [0x00, flags::CANCEL];

/// Incremental decoder of stream frames.
///
/// ```
/// use quill::codec::stream::FrameDecoder;
/// let mut d = FrameDecoder::new();
/// d.push(&[0x02, 0x01, b'h']);
/// assert!(d.next_frame().unwrap().is_none()); // payload incomplete
/// d.push(&[b'i', 0x00, 0x02]);
/// assert_eq!(&d.next_frame().unwrap().unwrap().payload[..], b"hi");
/// assert_eq!(d.next_frame().unwrap().unwrap().flags, 0x02);
/// ```
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_payload: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::with_max_payload(MAX_FRAME_PAYLOAD)
    }

    pub fn with_max_payload(max_payload: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_payload,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `None` if more bytes are needed. An oversized length
    /// is reported as soon as its varint is complete, before the payload arrives.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some((len, used)) = read_varint(&self.buf)? else {
            return Ok(None);
        };
        if len > self.max_payload as u64 {
            return Err(QuillError::protocol(format!(
                "frame payload of {len} bytes exceeds the {}-byte limit",
                self.max_payload
            )));
        }
        let len = len as usize;
        if self.buf.len() < used + 1 + len {
            // Reserve what the frame still needs so a large frame is one allocation.
            self.buf.reserve(used + 1 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(used);
        let flags = self.buf.get_u8();
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { flags, payload }))
    }
}

/// What a frame means to a reader of a message stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message (DATA, or the payload of DATA|END_STREAM).
    Message(Bytes),
    /// A credit grant from the peer.
    Credit(u64),
    /// The stream ended normally.
    End,
}

/// Turns decoded frames into message-stream events with the rules of §3: CANCEL is an
/// error, DATA|END_STREAM delivers then ends, unknown flag bits are ignored, nothing may
/// follow END_STREAM, and the body ending first is a truncated stream.
///
/// ```
/// use quill::codec::stream::{Event, MessageReader};
/// let mut r = MessageReader::new();
/// r.push(&[0x01, 0x03, b'x']); // DATA|END_STREAM
/// assert_eq!(r.next_event().unwrap(), Some(Event::Message(b"x"[..].into())));
/// assert_eq!(r.next_event().unwrap(), Some(Event::End));
/// r.finish().unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MessageReader {
    decoder: FrameDecoder,
    pending_end: bool,
    ended: bool,
}

impl MessageReader {
    pub fn new() -> Self {
        MessageReader {
            decoder: FrameDecoder::new(),
            ..Default::default()
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.decoder.push(chunk);
    }

    /// Whether END_STREAM has been seen.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next event, `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        if self.pending_end {
            self.pending_end = false;
            self.ended = true;
            return Ok(Some(Event::End));
        }
        loop {
            if self.ended {
                if self.decoder.buffered() > 0 {
                    return Err(QuillError::protocol(format!(
                        "{} bytes after END_STREAM",
                        self.decoder.buffered()
                    )));
                }
                return Ok(None);
            }
            let Some(frame) = self.decoder.next_frame()? else {
                return Ok(None);
            };
            let f = frame.flags;
            if f & flags::CANCEL != 0 {
                return Err(QuillError::stream(
                    "the peer cancelled the stream (CANCEL frame)",
                ));
            }
            if f & flags::DATA != 0 {
                if f & flags::END_STREAM != 0 {
                    self.pending_end = true;
                }
                return Ok(Some(Event::Message(frame.payload)));
            }
            if f & flags::END_STREAM != 0 {
                if !frame.payload.is_empty() {
                    return Err(QuillError::protocol(format!(
                        "END_STREAM frame carries {} payload bytes; it must be empty",
                        frame.payload.len()
                    )));
                }
                self.ended = true;
                return Ok(Some(Event::End));
            }
            if f & flags::CREDIT != 0 {
                let Some((grant, used)) = read_varint(&frame.payload)? else {
                    return Err(QuillError::protocol("CREDIT frame payload is not a varint"));
                };
                if used != frame.payload.len() {
                    return Err(QuillError::protocol("bytes left over in a CREDIT frame"));
                }
                return Ok(Some(Event::Credit(grant)));
            }
            // No known flag bit: ignored, as §3 asks of unknown bits.
        }
    }

    /// Call when the body has ended: an error unless END_STREAM was seen.
    pub fn finish(&self) -> Result<()> {
        if self.ended || self.pending_end {
            Ok(())
        } else if self.decoder.buffered() > 0 {
            Err(QuillError::stream(format!(
                "stream truncated inside a frame ({} bytes of an incomplete frame)",
                self.decoder.buffered()
            )))
        } else {
            Err(QuillError::stream(
                "stream ended before END_STREAM (truncated)",
            ))
        }
    }
}

/// Decodes a complete framed body into its messages (for tests, tools and the server).
pub fn decode_messages(body: &[u8]) -> Result<Vec<Bytes>> {
    let mut r = MessageReader::new();
    r.push(body);
    let mut out = Vec::new();
    while let Some(ev) = r.next_event()? {
        if let Event::Message(m) = ev {
            out.push(m);
        }
    }
    r.finish()?;
    Ok(out)
}

/// Encodes messages as DATA frames followed by END_STREAM.
pub fn encode_messages<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&frame_header(flags::DATA, m.len())?);
        out.extend_from_slice(m);
    }
    out.extend_from_slice(&END_STREAM_FRAME);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn end_stream_is_00_02() {
        assert_eq!(encode_messages([]).unwrap(), vec![0x00, 0x02]);
        assert_eq!(
            encode_messages([&b"hello"[..]]).unwrap(),
            hex::decode("050168656c6c6f0002").unwrap()
        );
    }

    #[test]
    fn varints() {
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        assert_eq!(read_varint(&v).unwrap(), Some((300, 2)));
        assert_eq!(read_varint(&[0x80]).unwrap(), None);
        let mut max = Vec::new();
        put_varint(&mut max, u64::MAX);
        assert_eq!(max.len(), 10);
        assert_eq!(read_varint(&max).unwrap(), Some((u64::MAX, 10)));
        assert!(matches!(
            read_varint(&[0xff; 11]),
            Err(QuillError::Protocol { .. })
        ));
        let mut over = vec![0xff; 9];
        over.push(0x02); // 2^64
        assert!(matches!(
            read_varint(&over),
            Err(QuillError::Protocol { .. })
        ));
    }

    #[test]
    fn oversized_frame_is_refused_before_its_payload() {
        let mut d = FrameDecoder::new();
        let mut hdr = Vec::new();
        put_varint(&mut hdr, MAX_FRAME_PAYLOAD as u64 + 1);
        d.push(&hdr);
        assert!(matches!(d.next_frame(), Err(QuillError::Protocol { .. })));
        assert!(matches!(
            encode_data(&vec![0; MAX_FRAME_PAYLOAD + 1]),
            Err(QuillError::InvalidArgument { .. })
        ));
        assert!(encode_data(&vec![0; MAX_FRAME_PAYLOAD]).is_ok());
    }

    #[test]
    fn stream_rules() {
        // DATA|END_STREAM delivers its payload.
        assert_eq!(
            decode_messages(&[0x01, 0x03, b'z']).unwrap(),
            vec![Bytes::from_static(b"z")]
        );
        // Missing END_STREAM is a truncated stream, not a normal end.
        let e = decode_messages(&[0x01, 0x01, b'z']).unwrap_err();
        assert!(matches!(e, QuillError::Stream { .. }), "{e}");
        let e = decode_messages(&[0x05, 0x01, b'z']).unwrap_err();
        assert!(e.to_string().contains("inside a frame"), "{e}");
        // CANCEL is an error.
        assert!(matches!(
            decode_messages(&[0x00, 0x04]),
            Err(QuillError::Stream { .. })
        ));
        // CREDIT and unknown bits are accepted.
        assert_eq!(
            decode_messages(&[0x01, 0x08, 0x05, 0x00, 0x40, 0x00, 0x02]).unwrap(),
            Vec::<Bytes>::new()
        );
        // Unknown bits beside DATA are ignored.
        assert_eq!(
            decode_messages(&[0x01, 0x81, b'a', 0x00, 0x02])
                .unwrap()
                .len(),
            1
        );
        // Nothing after END_STREAM.
        assert!(matches!(
            decode_messages(&[0x00, 0x02, 0x00]),
            Err(QuillError::Protocol { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_chunking_decodes_the_same(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), cuts in proptest::collection::vec(1usize..50, 1..20)) {
            let body = encode_messages(msgs.iter().map(|m| &m[..])).unwrap();
            let mut r = MessageReader::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < body.len() {
                let n = cuts[i % cuts.len()].min(body.len() - pos);
                r.push(&body[pos..pos + n]);
                pos += n;
                i += 1;
                while let Some(ev) = r.next_event().unwrap() {
                    if let Event::Message(m) = ev { got.push(m.to_vec()); }
                }
            }
            r.finish().unwrap();
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_messages(&bytes);
        }
    }
}
