//! The protobuf messages of protocol.md §9 and their conversions to the core types
//! (`quill::proto`) on arbitrary bytes.
//!
//! Checks: no panic; a `Tensor` message that converts gives a core tensor whose size is
//! its `byte_size` and which converts back to a message that converts to the same
//! tensor; a `TokenBatch` that converts keeps its mask length; every `GenerateResponse`
//! and `EmbedResponse` that decodes converts without panicking; the typed API's decoders
//! (`GenerateResponse::try_from`, `embeddings_from_reply`) never panic, and a response
//! they accept keeps its token count.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use quill::inference::{embeddings_from_reply, GenerateResponse};
use quill::proto::inference::v1 as pb;
use quill::proto::tensor::v1 as pbt;
use quill::proto::{token_batch_from_proto, token_batch_to_proto};
use quill::Tensor;

fn check_tensor(t: pbt::Tensor) {
    let declared = t.meta.as_ref().map(|m| m.byte_size);
    if let Ok(core) = Tensor::try_from(t) {
        assert_eq!(Some(core.size_bytes()), declared);
        let again = Tensor::try_from(pbt::Tensor::from(&core)).expect("a converted tensor converts back");
        assert_eq!(again, core);
    }
}

fuzz_target!(|input: &[u8]| {
    let body = Bytes::copy_from_slice(input);
    if let Ok(t) = pbt::Tensor::decode(body.clone()) {
        check_tensor(t);
    }
    if let Ok(b) = pb::TokenBatch::decode(body.clone()) {
        if let Ok((batch, mask)) = token_batch_from_proto(b) {
            assert!(mask.is_empty() || mask.len() == batch.tokens.len());
            token_batch_to_proto(&batch, &mask).expect("a converted batch converts back");
        }
    }
    if let Ok(r) = pb::GenerateResponse::decode(body.clone()) {
        let tokens = r.tokens.as_ref().map_or(0, |b| b.tokens.len());
        if let Ok(typed) = GenerateResponse::try_from(r.clone()) {
            assert_eq!(typed.tokens.tokens.len(), tokens);
        }
        if let Some(t) = r.embedding {
            check_tensor(t);
        }
        if let Some(b) = r.tokens {
            let _ = token_batch_from_proto(b);
        }
    }
    if let Ok(tensors) = embeddings_from_reply(body.clone()) {
        assert!(tensors.iter().all(|t| t.size_bytes() == t.data().len() as u64));
    }
    if let Ok(r) = pb::EmbedResponse::decode(body) {
        for t in r.embeddings {
            check_tensor(t);
        }
    }
});
