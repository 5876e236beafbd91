//! Conversions between the protobuf messages and the core types. Everything the peer
//! sends is checked: dtype and device numbers, dims, strides, `byte_size` against
//! shape × dtype and the data length; a mismatch is a typed error, never a panic.

use bytes::Bytes;

use super::inference::v1 as pb;
use super::tensor::v1 as pbt;
use crate::dtype::DType;
use crate::error::{QuillError, Result};
use crate::tensor::{Device, Tensor, TensorMeta};
use crate::token::{Token, TokenBatch};

impl TryFrom<pbt::TensorMeta> for TensorMeta {
    type Error = QuillError;

    /// The metadata of a `quill.tensor.v1.TensorMeta`. Strides must be absent or those
    /// of a row-major (C-contiguous) layout, the only one whose bytes Quill sends.
    fn try_from(m: pbt::TensorMeta) -> Result<TensorMeta> {
        let dtype = match u8::try_from(m.dtype) {
            Ok(0) => {
                return Err(QuillError::UnsupportedDType {
                    reason: "tensor dtype is DTYPE_UNSPECIFIED (0)".into(),
                })
            }
            Ok(n) => DType::from_wire(n)?,
            Err(_) => {
                return Err(QuillError::UnsupportedDType {
                    reason: format!("unknown tensor dtype number {}", m.dtype),
                })
            }
        };
        let device = match m.device {
            0 => Device::Cpu,
            1 => Device::Cuda,
            n => {
                return Err(QuillError::decode(format!(
                    "unknown tensor device number {n}"
                )))
            }
        };
        let shape = m
            .shape
            .iter()
            .map(|&d| {
                u64::try_from(d).map_err(|_| {
                    QuillError::decode(format!("negative dimension {d} in shape {:?}", m.shape))
                })
            })
            .collect::<Result<Vec<u64>>>()?;
        let meta = TensorMeta {
            shape,
            dtype,
            name: m.name,
            device,
        };
        meta.validate()
            .map_err(|e| QuillError::decode(e.to_string()))?;
        let size = meta
            .size_bytes()
            .map_err(|e| QuillError::decode(e.to_string()))?;
        if m.byte_size != size {
            return Err(QuillError::decode(format!(
                "TensorMeta byte_size {} does not match shape {:?} of {dtype} ({size} bytes)",
                m.byte_size, meta.shape
            )));
        }
        if !m.strides.is_empty() && m.strides != row_major_strides(&meta.shape, dtype)? {
            return Err(QuillError::decode(format!(
                "strides {:?} are not the row-major strides of shape {:?}; only contiguous tensors are supported",
                m.strides, meta.shape
            )));
        }
        Ok(meta)
    }
}

/// Byte strides of a row-major layout (what the core's bytes are).
fn row_major_strides(shape: &[u64], dtype: DType) -> Result<Vec<i64>> {
    let mut strides = vec![0i64; shape.len()];
    let mut step = dtype.element_size() as i64;
    for (i, &d) in shape.iter().enumerate().rev() {
        strides[i] = step;
        step = step
            .checked_mul(i64::try_from(d).unwrap_or(i64::MAX).max(1))
            .ok_or_else(|| QuillError::decode("tensor strides overflow i64"))?;
    }
    Ok(strides)
}

impl From<&TensorMeta> for pbt::TensorMeta {
    fn from(m: &TensorMeta) -> pbt::TensorMeta {
        pbt::TensorMeta {
            shape: m.shape.iter().map(|&d| d as i64).collect(),
            dtype: i32::from(m.dtype.wire()),
            device: i32::from(m.device.wire()),
            strides: Vec::new(),
            name: m.name.clone(),
            requires_grad: None,
            byte_size: m.size_bytes().unwrap_or(0),
        }
    }
}

impl TryFrom<pbt::Tensor> for Tensor {
    type Error = QuillError;

    /// A core tensor over the message's `data` (no copy when the message was decoded
    /// from `Bytes`); the data length must be the metadata's `byte_size`.
    fn try_from(t: pbt::Tensor) -> Result<Tensor> {
        let meta = t
            .meta
            .ok_or_else(|| QuillError::decode("tensor message has no meta"))?;
        let declared = meta.byte_size;
        let meta = TensorMeta::try_from(meta)?;
        if t.data.len() as u64 != declared {
            return Err(QuillError::decode(format!(
                "tensor data is {} bytes but its byte_size is {declared}",
                t.data.len()
            )));
        }
        Tensor::new(meta, t.data).map_err(|e| QuillError::decode(e.to_string()))
    }
}

impl From<&Tensor> for pbt::Tensor {
    /// The message over the tensor's own bytes (a shared `Bytes`, not a copy).
    fn from(t: &Tensor) -> pbt::Tensor {
        pbt::Tensor {
            meta: Some(pbt::TensorMeta::from(t.meta())),
            data: Bytes::clone(t.data()),
        }
    }
}

impl From<pb::Token> for Token {
    fn from(t: pb::Token) -> Token {
        Token {
            id: t.id,
            position: t.position,
            text: t.text,
            logprob: t.logprob,
            is_special: t.is_special,
        }
    }
}

impl From<&Token> for pb::Token {
    fn from(t: &Token) -> pb::Token {
        pb::Token {
            id: t.id,
            text: t.text.clone(),
            logprob: t.logprob,
            position: t.position,
            is_special: t.is_special,
        }
    }
}

/// A core batch and its `attention_mask` (one flag per token, or empty when the peer
/// sent none; any other length is an error). The core `TokenBatch` has no mask of its
/// own: the binary token encoding of protocol.md §8 carries none.
pub fn token_batch_from_proto(b: pb::TokenBatch) -> Result<(TokenBatch, Vec<bool>)> {
    if !b.attention_mask.is_empty() && b.attention_mask.len() != b.tokens.len() {
        return Err(QuillError::decode(format!(
            "attention_mask has {} entries for {} tokens",
            b.attention_mask.len(),
            b.tokens.len()
        )));
    }
    let batch = TokenBatch {
        tokens: b.tokens.into_iter().map(Token::from).collect(),
        sequence_id: b.sequence_id,
        is_final: b.is_final,
        metadata: Default::default(),
    };
    Ok((batch, b.attention_mask))
}

/// The message of a core batch with `attention_mask` (empty: none sent).
pub fn token_batch_to_proto(b: &TokenBatch, attention_mask: &[bool]) -> Result<pb::TokenBatch> {
    if !attention_mask.is_empty() && attention_mask.len() != b.tokens.len() {
        return Err(QuillError::invalid(format!(
            "attention_mask has {} entries for {} tokens",
            attention_mask.len(),
            b.tokens.len()
        )));
    }
    Ok(pb::TokenBatch {
        tokens: b.tokens.iter().map(pb::Token::from).collect(),
        sequence_id: b.sequence_id,
        is_final: b.is_final,
        attention_mask: attention_mask.to_vec(),
    })
}

/// A message that does not decode (truncated, a wrong wire type, …) as a typed error.
impl From<prost::DecodeError> for QuillError {
    fn from(e: prost::DecodeError) -> Self {
        QuillError::decode(format!("malformed protobuf message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    // The golden bytes, derived by hand from the field numbers (docs/protocol.md §9).

    #[test]
    fn generate_request_golden_bytes() {
        let req = pb::GenerateRequest {
            input_ids: vec![1, 2, 300],
            max_new_tokens: Some(16),
            temperature: Some(0.5),
            top_k: Some(40),
            stream_embeddings: true,
            stop_token_ids: vec![2],
            ..Default::default()
        };
        let golden = unhex("0a 04 01 02 ac 02 10 10 1d 00 00 00 3f 28 28 30 01 3a 01 02");
        assert_eq!(req.encode_to_vec(), golden);
        assert_eq!(pb::GenerateRequest::decode(&golden[..]).unwrap(), req);
    }

    #[test]
    fn embed_request_golden_bytes() {
        let req = pb::EmbedRequest {
            input_ids: vec![7],
            layers: vec![-1],
            pool: true,
            pool_strategy: Some("mean".into()),
        };
        let golden = unhex("0a 01 07 12 0a ff ff ff ff ff ff ff ff ff 01 18 01 22 04 6d 65 61 6e");
        assert_eq!(req.encode_to_vec(), golden);
    }

    #[test]
    fn generate_response_golden_bytes_decode_to_core_tokens() {
        let golden = unhex("0a 0a 0a 06 08 05 12 02 68 69 18 01 18 01 20 01 2a 04 73 74 6f 70");
        let resp = pb::GenerateResponse::decode(&golden[..]).unwrap();
        assert_eq!(resp.total_generated, 1);
        assert!(resp.is_complete);
        assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
        let (batch, mask) = token_batch_from_proto(resp.tokens.clone().unwrap()).unwrap();
        assert!(batch.is_final && mask.is_empty());
        assert_eq!(batch.tokens, vec![Token::with_text(5, "hi", 0, None)]);
        assert_eq!(resp.encode_to_vec(), golden);
    }

    #[test]
    fn tensor_golden_bytes_and_round_trip() {
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let t = Tensor::from_bytes(&data, vec![2], DType::Float32, Some("x".into())).unwrap();
        let golden = unhex("0a 0a 0a 01 02 10 01 2a 01 78 38 08 12 08 00 00 80 3f 00 00 00 40");
        assert_eq!(pbt::Tensor::from(&t).encode_to_vec(), golden);
        // Decoding from `Bytes` slices the body: the tensor's data is not a copy.
        let body = Bytes::from(golden);
        let back = Tensor::try_from(pbt::Tensor::decode(body.clone()).unwrap()).unwrap();
        assert_eq!(back, t);
        assert!(body.as_ptr_range().contains(&back.data().as_ptr()));
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        let meta = |dtype: i32, shape: Vec<i64>, byte_size: u64| pbt::TensorMeta {
            shape,
            dtype,
            byte_size,
            ..Default::default()
        };
        let tensor = |m: pbt::TensorMeta, len: usize| pbt::Tensor {
            meta: Some(m),
            data: Bytes::from(vec![0u8; len]),
        };
        let err = |t: pbt::Tensor| Tensor::try_from(t).unwrap_err();
        assert!(matches!(
            err(tensor(meta(11, vec![2], 2), 2)),
            QuillError::UnsupportedDType { .. }
        ));
        assert!(matches!(
            err(tensor(meta(0, vec![2], 2), 2)),
            QuillError::UnsupportedDType { .. }
        ));
        assert!(err(tensor(meta(1, vec![2], 7), 8))
            .to_string()
            .contains("byte_size 7"));
        assert!(err(tensor(meta(1, vec![2], 8), 7))
            .to_string()
            .contains("data is 7 bytes"));
        assert!(err(tensor(meta(1, vec![-2], 8), 8))
            .to_string()
            .contains("negative dimension"));
        let mut strided = meta(1, vec![2, 3], 24);
        strided.strides = vec![4, 8];
        assert!(err(tensor(strided, 24)).to_string().contains("row-major"));
        let mut contiguous = meta(1, vec![2, 3], 24);
        contiguous.strides = vec![12, 4];
        assert!(Tensor::try_from(tensor(contiguous, 24)).is_ok());
        assert!(err(pbt::Tensor {
            meta: None,
            data: Bytes::new()
        })
        .to_string()
        .contains("no meta"));
        // Truncated and wrongly typed messages.
        let golden = unhex("0a 04 01 02 ac 02 10 10");
        let e: QuillError = pb::GenerateRequest::decode(&golden[..golden.len() - 1])
            .unwrap_err()
            .into();
        assert!(matches!(e, QuillError::Decode { .. }), "{e}");
        let e: QuillError = pb::GenerateRequest::decode(&[0x0d, 1, 2][..])
            .unwrap_err()
            .into();
        assert!(matches!(e, QuillError::Decode { .. }), "{e}");
        // An attention mask that does not match the tokens.
        let batch = pb::TokenBatch {
            tokens: vec![pb::Token::default()],
            attention_mask: vec![true, false],
            ..Default::default()
        };
        assert!(matches!(
            token_batch_from_proto(batch),
            Err(QuillError::Decode { .. })
        ));
        let core = TokenBatch::new(Some(1));
        assert!(matches!(
            token_batch_to_proto(&core, &[true]),
            Err(QuillError::InvalidArgument { .. })
        ));
    }
}
