//! Tensor frames (protocol.md §6): `[type: u8][4 reserved][len: u32 BE][payload]`.
//!
//! A tensor travels as TENSOR_META, TENSOR_PAYLOAD…, END_STREAM. Encoding slices the
//! tensor's shared buffer, so the payload frames reference the tensor's bytes instead of
//! copying them; only the 9-byte headers are new memory.

use bytes::{Buf, Bytes, BytesMut};

use crate::dtype::DType;
use crate::error::{QuillError, Result};
use crate::protocol::{
    tensor_frame as ty, MAX_FRAME_PAYLOAD, TENSOR_FRAME_HEADER_LEN, TENSOR_PAYLOAD_CHUNK,
};
use crate::tensor::{Device, Tensor, TensorMeta};
use crate::token::TokenBatch;

/// One decoded tensor frame.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorFrame {
    ProtoMsg(Bytes),
    End,
    Cancel(String),
    Credit(u64),
    Meta(TensorMeta),
    Payload(Bytes),
    TokenBatch(TokenBatch),
}

/// The 9-byte header of a frame of type `ty` with a `len`-byte payload.
pub fn frame_header(ty: u8, len: usize) -> Result<[u8; TENSOR_FRAME_HEADER_LEN]> {
    let len = u32::try_from(len).map_err(|_| {
        QuillError::invalid(format!("tensor frame payload of {len} bytes exceeds u32"))
    })?;
    let mut h = [0u8; TENSOR_FRAME_HEADER_LEN];
    h[0] = ty;
    h[5..9].copy_from_slice(&len.to_be_bytes());
    Ok(h)
}

/// A whole frame: header then payload.
pub fn encode_frame(ty: u8, payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(TENSOR_FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&frame_header(ty, payload.len())?);
    out.extend_from_slice(payload);
    Ok(out)
}

/// The TENSOR_META payload.
///
/// ```
/// use quill::{codec::tensor::encode_meta, DType, TensorMeta};
/// let m = TensorMeta::new(vec![2, 3], DType::Float32, Some("x".into())).unwrap();
/// let hex: String = encode_meta(&m).unwrap().iter().map(|b| format!("{b:02x}")).collect();
/// assert_eq!(hex, "0202000000000000000300000000000000010018000000000000000100" .to_owned() + "78");
/// ```
pub fn encode_meta(meta: &TensorMeta) -> Result<Vec<u8>> {
    meta.validate()?;
    let name = meta.name.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(1 + 8 * meta.shape.len() + 1 + 1 + 8 + 2 + name.len());
    out.push(meta.shape.len() as u8);
    for d in &meta.shape {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.push(meta.dtype.wire());
    out.push(meta.device.wire());
    out.extend_from_slice(&meta.size_bytes()?.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(out)
}

/// Parses a TENSOR_META payload and checks `byte_size` against shape × dtype.
pub fn decode_meta(mut p: &[u8]) -> Result<TensorMeta> {
    fn need(p: &[u8], n: usize, what: &str) -> Result<()> {
        if p.len() < n {
            return Err(QuillError::decode(format!(
                "truncated TENSOR_META: {what} needs {n} bytes, {} left",
                p.len()
            )));
        }
        Ok(())
    }
    need(p, 1, "ndim")?;
    let ndim = p.get_u8() as usize;
    need(p, 8 * ndim, "the dims")?;
    let shape: Vec<u64> = (0..ndim).map(|_| p.get_u64_le()).collect();
    need(p, 1 + 1 + 8 + 2, "dtype, device, byte_size and name_len")?;
    let dtype = DType::from_wire(p.get_u8())?;
    let device = Device::from_wire(p.get_u8())?;
    let byte_size = p.get_u64_le();
    let name_len = p.get_u16_le() as usize;
    need(p, name_len, "the name")?;
    let name = if name_len == 0 {
        None
    } else {
        Some(
            std::str::from_utf8(&p[..name_len])
                .map_err(|e| QuillError::decode(format!("tensor name is not valid UTF-8: {e}")))?
                .to_owned(),
        )
    };
    p.advance(name_len);
    if !p.is_empty() {
        return Err(QuillError::decode(format!(
            "{} bytes left over after TENSOR_META",
            p.len()
        )));
    }
    let meta = TensorMeta {
        shape,
        dtype,
        name,
        device,
    };
    let size = meta
        .size_bytes()
        .map_err(|e| QuillError::decode(e.to_string()))?;
    if size != byte_size {
        return Err(QuillError::decode(format!(
            "TENSOR_META byte_size {byte_size} does not match shape {:?} of {dtype} ({size} bytes)",
            meta.shape
        )));
    }
    meta.validate()
        .map_err(|e| QuillError::decode(e.to_string()))?;
    Ok(meta)
}

/// The frames of a tensor as a list of buffers: headers plus slices of the tensor's own
/// buffer (no copy of element data). `chunk` is the payload size per frame.
pub fn encode_tensor_parts(t: &Tensor, chunk: usize) -> Result<Vec<Bytes>> {
    let chunk = chunk.clamp(1, MAX_FRAME_PAYLOAD);
    let meta = encode_meta(t.meta())?;
    let data = t.data();
    let mut parts = Vec::with_capacity(3 + 2 * data.len().div_ceil(chunk));
    parts.push(Bytes::copy_from_slice(&frame_header(
        ty::TENSOR_META,
        meta.len(),
    )?));
    parts.push(Bytes::from(meta));
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        parts.push(Bytes::copy_from_slice(&frame_header(
            ty::TENSOR_PAYLOAD,
            end - off,
        )?));
        parts.push(data.slice(off..end));
        off = end;
    }
    parts.push(Bytes::copy_from_slice(&frame_header(ty::END_STREAM, 0)?));
    Ok(parts)
}

/// A tensor as one contiguous frame body (META, 64 KiB PAYLOADs, END_STREAM).
pub fn encode_tensor(t: &Tensor) -> Vec<u8> {
    let parts = encode_tensor_parts(t, TENSOR_PAYLOAD_CHUNK)
        .expect("a constructed Tensor has valid metadata");
    let mut out = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        out.extend_from_slice(&p);
    }
    out
}

/// A TOKEN_BATCH frame.
pub fn encode_token_batch_frame(b: &TokenBatch) -> Result<Vec<u8>> {
    encode_frame(ty::TOKEN_BATCH, &b.encode()?)
}

/// Checks a 9-byte frame header: its type is one protocol.md §6 names and its payload
/// fits `max_payload`. Returns the type and payload length.
fn parse_header(h: &[u8; TENSOR_FRAME_HEADER_LEN], max_payload: usize) -> Result<(u8, usize)> {
    let kind = h[0];
    let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    if !matches!(
        kind,
        ty::PROTO_MSG
            | ty::END_STREAM
            | ty::CANCEL
            | ty::CREDIT
            | ty::TENSOR_META
            | ty::TENSOR_PAYLOAD
            | ty::TOKEN_BATCH
    ) {
        return Err(QuillError::decode(format!(
            "unknown tensor frame type 0x{kind:02x}"
        )));
    }
    if len > max_payload {
        return Err(QuillError::decode(format!(
            "tensor frame payload of {len} bytes exceeds the {max_payload}-byte limit"
        )));
    }
    Ok((kind, len))
}

/// The frame of type `kind` (already checked by [`parse_header`]) with this payload.
fn frame_from(kind: u8, payload: Bytes) -> Result<TensorFrame> {
    Ok(match kind {
        ty::PROTO_MSG => TensorFrame::ProtoMsg(payload),
        ty::END_STREAM => {
            if !payload.is_empty() {
                return Err(QuillError::decode("END_STREAM tensor frame must be empty"));
            }
            TensorFrame::End
        }
        ty::CANCEL => TensorFrame::Cancel(String::from_utf8_lossy(&payload).into_owned()),
        ty::CREDIT => {
            let b: [u8; 8] = payload[..].try_into().map_err(|_| {
                QuillError::decode(format!(
                    "CREDIT frame payload is {} bytes, expected 8",
                    payload.len()
                ))
            })?;
            TensorFrame::Credit(u64::from_le_bytes(b))
        }
        ty::TENSOR_META => TensorFrame::Meta(decode_meta(&payload)?),
        ty::TENSOR_PAYLOAD => TensorFrame::Payload(payload),
        _ => TensorFrame::TokenBatch(TokenBatch::decode(&payload)?),
    })
}

/// Incremental decoder of tensor frames; feed chunks of any size.
#[derive(Debug)]
pub struct TensorFrameDecoder {
    buf: BytesMut,
    max_payload: usize,
}

impl Default for TensorFrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TensorFrameDecoder {
    pub fn new() -> Self {
        TensorFrameDecoder {
            buf: BytesMut::new(),
            max_payload: MAX_FRAME_PAYLOAD,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<TensorFrame>> {
        let Some(head) = self.buf.first_chunk::<TENSOR_FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let (kind, len) = parse_header(head, self.max_payload)?;
        if self.buf.len() < TENSOR_FRAME_HEADER_LEN + len {
            self.buf
                .reserve(TENSOR_FRAME_HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(TENSOR_FRAME_HEADER_LEN);
        frame_from(kind, self.buf.split_to(len).freeze()).map(Some)
    }
}

/// Reassembles one tensor from META, PAYLOAD… and END frames with size checks.
#[derive(Debug, Default)]
pub struct TensorAssembler {
    meta: Option<TensorMeta>,
    expected: usize,
    data: Option<super::ReceiveBuffer>,
}

impl TensorAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one frame; returns the tensor when END_STREAM completes it.
    pub fn on_frame(&mut self, frame: TensorFrame) -> Result<Option<Tensor>> {
        match frame {
            TensorFrame::Meta(meta) => {
                if self.meta.is_some() {
                    return Err(QuillError::decode("second TENSOR_META before END_STREAM"));
                }
                self.expected = meta.size_bytes()? as usize;
                self.meta = Some(meta);
                self.data = None;
                Ok(None)
            }
            TensorFrame::Payload(p) => {
                self.begin_payload(p.len())?;
                self.payload_bytes(&p);
                Ok(None)
            }
            TensorFrame::End => {
                let Some(meta) = self.meta.take() else {
                    return Err(QuillError::decode("END_STREAM before TENSOR_META"));
                };
                let data = self.data.take().map(|d| d.into_bytes()).unwrap_or_default();
                if data.len() != self.expected {
                    return Err(QuillError::decode(format!(
                        "tensor payload is {} bytes but its metadata declares {}",
                        data.len(),
                        self.expected
                    )));
                }
                Tensor::new(meta, data)
                    .map(Some)
                    .map_err(|e| QuillError::decode(e.to_string()))
            }
            TensorFrame::Cancel(reason) => Err(QuillError::stream(format!(
                "the peer cancelled the tensor stream{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            ))),
            TensorFrame::Credit(_) => Ok(None),
            TensorFrame::ProtoMsg(_) | TensorFrame::TokenBatch(_) => Err(QuillError::decode(
                "unexpected non-tensor frame inside a tensor stream",
            )),
        }
    }

    /// Checks a TENSOR_PAYLOAD frame of `len` bytes from its header alone: it must follow
    /// TENSOR_META and stay within the size the metadata declares.
    fn begin_payload(&mut self, len: usize) -> Result<()> {
        if self.meta.is_none() {
            return Err(QuillError::decode("TENSOR_PAYLOAD before TENSOR_META"));
        }
        let received = self.data.as_ref().map_or(0, super::ReceiveBuffer::len);
        if received + len > self.expected {
            return Err(QuillError::decode(format!(
                "tensor payload exceeds the {} bytes its metadata declares",
                self.expected
            )));
        }
        Ok(())
    }

    /// Payload bytes of a frame [`begin_payload`](Self::begin_payload) accepted, copied
    /// once, into the tensor's own buffer.
    fn payload_bytes(&mut self, bytes: &[u8]) {
        self.data
            .get_or_insert_with(|| super::ReceiveBuffer::new(self.expected))
            .extend_from_slice(bytes);
    }

    /// Whether a tensor is partly received.
    pub fn in_progress(&self) -> bool {
        self.meta.is_some()
    }
}

/// Decodes a complete tensor-frame body holding exactly one tensor.
pub fn decode_tensor(body: &[u8]) -> Result<Tensor> {
    let mut reader = TensorReader::new();
    reader.push(body)?;
    reader.finish()
}

/// The frame a [`TensorReader`] is in the middle of.
#[derive(Debug)]
struct OpenFrame {
    kind: u8,
    len: usize,
    remaining: usize,
    /// The payload of a frame other than TENSOR_PAYLOAD (whose bytes go straight into
    /// the tensor's buffer).
    small: Vec<u8>,
}

/// Reads exactly one tensor from a body of tensor frames pushed in any chunking: the
/// one place that decides when such a body is complete, used by [`decode_tensor`], the
/// client's tensor calls and the bundled server's Upload. Errors are
/// [`QuillError::Decode`] (or `UnsupportedDType`): from [`push`](Self::push) for
/// malformed frames, a tensor over the limit or bytes after the tensor's END_STREAM;
/// from [`finish`](Self::finish) for a body that ends early or holds no tensor.
///
/// Element bytes are copied once, from the pushed chunk into the tensor's buffer: the
/// reader keeps only a frame header or a small frame's payload between pushes.
///
/// ```
/// use quill::codec::tensor::{encode_tensor, TensorReader};
/// use quill::{DType, Tensor};
/// let frames = encode_tensor(&Tensor::from_bytes(&[1, 2, 3], vec![3], DType::Uint8, None).unwrap());
/// let mut reader = TensorReader::new();
/// for chunk in frames.chunks(5) {
///     reader.push(chunk).unwrap();
/// }
/// assert_eq!(reader.finish().unwrap().data().as_ref(), &[1, 2, 3]);
/// ```
#[derive(Debug, Default)]
pub struct TensorReader {
    head: [u8; TENSOR_FRAME_HEADER_LEN],
    head_len: usize,
    open: Option<OpenFrame>,
    assembler: TensorAssembler,
    tensor: Option<Tensor>,
    limit: Option<(u64, &'static str)>,
}

impl TensorReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader that refuses a tensor whose metadata declares more than `bytes` bytes,
    /// as soon as TENSOR_META arrives (before any payload is kept); `setting` names the
    /// limit in the error.
    pub fn with_limit(bytes: u64, setting: &'static str) -> Self {
        TensorReader {
            limit: Some((bytes, setting)),
            ..Self::default()
        }
    }

    /// Feeds the next bytes of the body.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<()> {
        while !chunk.is_empty() {
            if self.tensor.is_some() {
                return Err(trailing_bytes(chunk.len()));
            }
            let Some(open) = &mut self.open else {
                let n = (TENSOR_FRAME_HEADER_LEN - self.head_len).min(chunk.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&chunk[..n]);
                self.head_len += n;
                chunk = &chunk[n..];
                if self.head_len == TENSOR_FRAME_HEADER_LEN {
                    self.head_len = 0;
                    let (kind, len) = parse_header(&self.head, MAX_FRAME_PAYLOAD)?;
                    if kind == ty::TENSOR_PAYLOAD {
                        self.assembler.begin_payload(len)?;
                    }
                    self.open = Some(OpenFrame {
                        kind,
                        len,
                        remaining: len,
                        small: Vec::new(),
                    });
                    if len == 0 {
                        self.close_frame()?;
                    }
                }
                continue;
            };
            let n = open.remaining.min(chunk.len());
            if open.kind == ty::TENSOR_PAYLOAD {
                self.assembler.payload_bytes(&chunk[..n]);
            } else {
                open.small.extend_from_slice(&chunk[..n]);
            }
            open.remaining -= n;
            chunk = &chunk[n..];
            if open.remaining == 0 {
                self.close_frame()?;
            }
        }
        Ok(())
    }

    /// The open frame's last byte has arrived.
    fn close_frame(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if open.kind == ty::TENSOR_PAYLOAD {
            return Ok(());
        }
        let frame = frame_from(open.kind, Bytes::from(open.small))?;
        if let (TensorFrame::Meta(meta), Some((limit, setting))) = (&frame, self.limit) {
            let size = meta.size_bytes()?;
            if size > limit {
                return Err(QuillError::decode(format!(
                    "tensor of {size} bytes exceeds the {limit}-byte limit ({setting})"
                )));
            }
        }
        self.tensor = self.assembler.on_frame(frame)?;
        Ok(())
    }

    /// Whether the tensor's END_STREAM has arrived.
    pub fn is_complete(&self) -> bool {
        self.tensor.is_some()
    }

    /// At the end of the body: the tensor, or why the body holds none.
    pub fn finish(self) -> Result<Tensor> {
        if let Some(tensor) = self.tensor {
            return Ok(tensor);
        }
        let partial = self.head_len
            + self
                .open
                .as_ref()
                .map_or(0, |f| TENSOR_FRAME_HEADER_LEN + f.len - f.remaining);
        Err(QuillError::decode(if partial > 0 {
            format!(
                "tensor frames are truncated: the body ends inside a frame ({partial} bytes of an incomplete frame)"
            )
        } else if self.assembler.in_progress() {
            "tensor frames end before END_STREAM (truncated)".to_owned()
        } else {
            "no tensor in the body (no frames before its end)".to_owned()
        }))
    }
}

fn trailing_bytes(n: usize) -> QuillError {
    QuillError::decode(format!("{n} bytes after the tensor's END_STREAM"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '|'], "")).unwrap()
    }

    #[test]
    fn protocol_meta_example() {
        let example = unhex("02 | 02 00 00 00 00 00 00 00 | 03 00 00 00 00 00 00 00 | 01 | 00 | 18 00 00 00 00 00 00 00 | 01 00 | 78");
        let m = TensorMeta::new(vec![2, 3], DType::Float32, Some("x".into())).unwrap();
        assert_eq!(encode_meta(&m).unwrap(), example);
        assert_eq!(decode_meta(&example).unwrap(), m);
    }

    #[test]
    fn tensor_round_trip_across_chunks() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let t =
            Tensor::from_bytes(&data, vec![50_000], DType::Float32, Some("big".into())).unwrap();
        let body = encode_tensor(&t);
        // META (1+8+1+1+8+2+3 = 24) + 4 payload frames (3 × 64 KiB + rest) + END.
        assert_eq!(&body[..9], &[0x10, 0, 0, 0, 0, 0, 0, 0, 24]);
        assert_eq!(&body[body.len() - 9..], &[0x02, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(body.len(), 9 + 24 + 4 * 9 + 200_000 + 9);
        let back = decode_tensor(&body).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn every_split_of_the_body_decodes_alike() {
        // Payload frames of 3 bytes: every cut lands in a header, a payload or META.
        let t = Tensor::from_bytes(&[9u8; 10], vec![5], DType::Float16, Some("n".into())).unwrap();
        let body: Vec<u8> = encode_tensor_parts(&t, 3).unwrap().concat();
        for a in 0..body.len() {
            for b in a..body.len() {
                let mut r = TensorReader::new();
                for piece in [&body[..a], &body[a..b], &body[b..]] {
                    r.push(piece).unwrap();
                }
                assert_eq!(r.finish().unwrap(), t, "cuts {a} {b}");
            }
        }
        // A body cut inside a payload reports how much of the frame arrived.
        let mut r = TensorReader::new();
        let meta_frame = TENSOR_FRAME_HEADER_LEN + encode_meta(t.meta()).unwrap().len();
        r.push(&body[..meta_frame + TENSOR_FRAME_HEADER_LEN + 2])
            .unwrap();
        let err = r.finish().unwrap_err().to_string();
        assert!(err.contains("11 bytes of an incomplete frame"), "{err}");
    }

    #[test]
    fn bad_tensor_frames() {
        let t = Tensor::from_bytes(&[1, 2, 3, 4], vec![4], DType::Uint8, None).unwrap();
        let body = encode_tensor(&t);
        for cut in 0..body.len() {
            let e = decode_tensor(&body[..cut]).unwrap_err();
            assert!(matches!(e, QuillError::Decode { .. }), "cut {cut}: {e:?}");
        }
        // PAYLOAD before META.
        let mut bad = encode_frame(ty::TENSOR_PAYLOAD, &[1]).unwrap();
        bad.extend(encode_frame(ty::END_STREAM, &[]).unwrap());
        assert!(decode_tensor(&bad)
            .unwrap_err()
            .to_string()
            .contains("before TENSOR_META"));
        // Unknown frame type.
        assert!(decode_tensor(&encode_frame(0x42, &[]).unwrap())
            .unwrap_err()
            .to_string()
            .contains("0x42"));
        // Oversized frame refused from its header alone.
        let mut hdr = frame_header(ty::TENSOR_PAYLOAD, 0).unwrap();
        hdr[5..9].copy_from_slice(&(MAX_FRAME_PAYLOAD as u32 + 1).to_be_bytes());
        assert!(decode_tensor(&hdr)
            .unwrap_err()
            .to_string()
            .contains("limit"));
        // Too many payload bytes.
        let meta = encode_meta(t.meta()).unwrap();
        let mut over = encode_frame(ty::TENSOR_META, &meta).unwrap();
        over.extend(encode_frame(ty::TENSOR_PAYLOAD, &[0; 5]).unwrap());
        assert!(decode_tensor(&over)
            .unwrap_err()
            .to_string()
            .contains("exceeds"));
        // Unknown dtype number, byte_size mismatch, overflowing shape.
        let mut m = meta.clone();
        m[1 + 8] = 0x0b;
        assert!(matches!(
            decode_meta(&m),
            Err(QuillError::UnsupportedDType { .. })
        ));
        let mut m = meta.clone();
        m[1 + 8 + 2] = 5;
        assert!(decode_meta(&m)
            .unwrap_err()
            .to_string()
            .contains("byte_size"));
        let huge = TensorMeta {
            shape: vec![u64::MAX, 3],
            dtype: DType::Uint8,
            name: None,
            device: Device::Cpu,
        };
        let mut m = vec![2u8];
        for d in &huge.shape {
            m.extend(d.to_le_bytes());
        }
        m.extend([8, 0]);
        m.extend(0u64.to_le_bytes());
        m.extend(0u16.to_le_bytes());
        assert!(matches!(decode_meta(&m), Err(QuillError::Decode { .. })));
    }

    proptest! {
        #[test]
        fn meta_round_trip(shape in proptest::collection::vec(0u64..20, 0..6), d in 0usize..9, name in proptest::option::of("[a-z]{1,8}")) {
            let m = TensorMeta::new(shape, DType::ALL[d], name).unwrap();
            prop_assert_eq!(decode_meta(&encode_meta(&m).unwrap()).unwrap(), m);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_tensor(&bytes);
            let _ = decode_meta(&bytes);
        }
    }
}
