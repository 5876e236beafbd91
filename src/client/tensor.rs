//! Tensor answers: a response body of tensor frames decoded as it arrives. (Tensor
//! uploads are a request [`Body`](super::Body), framed in `body.rs`.)

use super::call::CallContext;
use super::compression::decoder_for;
use super::errors::{decode_as_protocol, map_body_error, BodyKind};
use crate::codec::tensor::TensorReader;
use crate::error::{QuillError, Result};
use crate::tensor::Tensor;

/// Decodes the frames as chunks arrive. Memory stays bounded by the tensor size (checked
/// against `max_decoded_size` as soon as TENSOR_META arrives) plus one frame.
pub(crate) async fn read_tensor(ctx: &CallContext, mut resp: reqwest::Response) -> Result<Tensor> {
    let mut decoder = decoder_for(resp.headers(), None)?;
    let mut reader = TensorReader::with_limit(ctx.max_decoded_size, "max_decoded_size");
    loop {
        while let Some(piece) = decoder.next_output()? {
            // Malformed frames, an oversized tensor or bytes after it: the peer broke
            // the protocol.
            reader.push(&piece).map_err(decode_as_protocol)?;
            // A small compressed chunk can decode to endless empty frames: yield between
            // the 64 KiB pieces so the call deadline can end the call (see stream.rs).
            tokio::task::yield_now().await;
        }
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| map_body_error(e, &ctx.label, BodyKind::Stream))?;
        match chunk {
            Some(chunk) => decoder.push(chunk),
            None => break,
        }
    }
    decoder.finish()?;
    // The body ended without a whole tensor: the response was cut short.
    reader
        .finish()
        .map_err(|e| QuillError::stream(format!("tensor response of {}: {e}", ctx.label.path)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::stream::tests::{serve_once, zstd_head, zstd_repeat};
    use super::*;
    use crate::client::Call;
    use crate::codec::tensor::{encode_frame, encode_meta};
    use crate::protocol::tensor_frame;
    use crate::{ClientConfig, DType, QuillClient, TensorMeta};
    use bytes::Bytes;

    #[test]
    fn a_bomb_of_empty_payload_frames_cannot_outlast_the_deadline() {
        // TENSOR_META of a 1-byte tensor, then ~1 GiB of empty TENSOR_PAYLOAD frames
        // from a few hundred KiB of zstd.
        let meta = TensorMeta::new(vec![1], DType::Uint8, None).unwrap();
        let meta = encode_frame(tensor_frame::TENSOR_META, &encode_meta(&meta).unwrap()).unwrap();
        let mut body = zstd::bulk::compress(&meta, 1).unwrap();
        let empty_payload = encode_frame(tensor_frame::TENSOR_PAYLOAD, &[]).unwrap();
        body.extend(zstd_repeat(&empty_payload, 1 << 30));
        let addr = serve_once(zstd_head(body.len()), body);
        let mut cfg = ClientConfig::new(format!("http://{addr}"));
        cfg.timeout_ms = 300;
        let c = QuillClient::with_config(cfg).unwrap();
        let start = std::time::Instant::now();
        let r = c.block_on(c.run::<Tensor>(Call::proto("s.v1.S", "M", Bytes::new())));
        assert!(matches!(r, Err(QuillError::Timeout { .. })), "{r:?}");
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }
}
