//! Tensor frames and TENSOR_META (protocol.md §6): `decode_tensor`, `decode_meta` and
//! `TensorReader` (the one reader the client's tensor calls and the bundled server's
//! Upload share) fed in chunks whose sizes come from the first bytes of the input.
//!
//! Checks: no panic; `encode_meta(decode_meta(b)) == b` (the encoding is canonical);
//! chunked decoding agrees with `decode_tensor`; a decoded tensor re-encodes and decodes
//! to itself; and a tensor built from the input survives encode → chunked decode with a
//! payload chunk size taken from the input.
#![no_main]
// QuillError carries a Problem inline (see lib.rs of quill).
#![allow(clippy::result_large_err)]

use libfuzzer_sys::fuzz_target;
use quill::codec::tensor::{
    decode_meta, decode_tensor, encode_meta, encode_tensor, encode_tensor_parts, TensorFrame,
    TensorFrameDecoder, TensorReader,
};
use quill::{DType, QuillError, Tensor};
use quill_fuzz::{chunks, take_cuts};

/// What `decode_tensor` does, with the body delivered in `pieces`; every TENSOR_META
/// met on the way must re-encode to itself.
fn decode_chunked(pieces: &[&[u8]]) -> Result<Tensor, QuillError> {
    let mut frames = TensorFrameDecoder::new();
    for piece in pieces {
        frames.push(piece);
        while let Ok(Some(frame)) = frames.next_frame() {
            if let TensorFrame::Meta(m) = &frame {
                assert_eq!(&decode_meta(&encode_meta(m).unwrap()).unwrap(), m);
            }
        }
    }
    let mut reader = TensorReader::new();
    for piece in pieces {
        reader.push(piece)?;
    }
    reader.finish()
}

fuzz_target!(|input: &[u8]| {
    let (cuts, data) = take_cuts(input);

    if let Ok(meta) = decode_meta(data) {
        assert_eq!(
            encode_meta(&meta).unwrap(),
            data,
            "TENSOR_META is canonical"
        );
    }

    let whole = decode_tensor(data);
    let split = decode_chunked(&chunks(data, &cuts));
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("decode_tensor {a:?} vs chunked {b:?}"),
    }
    if let Ok(t) = &whole {
        assert_eq!(t.data().len() as u64, t.meta().size_bytes().unwrap());
        assert_eq!(&decode_tensor(&encode_tensor(t)).unwrap(), t);
    }

    // A tensor built from the input: dtype and name from the first bytes, elements from
    // the rest (trimmed to whole elements), shape [rows, cols] or [n].
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let dtype = DType::ALL[usize::from(sel) % DType::ALL.len()];
    let size = dtype.element_size();
    let name_len = usize::from(sel >> 4).min(rest.len());
    let (name, elems) = rest.split_at(name_len);
    let name = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
    let n = elems.len() / size;
    let rows = cuts.first().copied().unwrap_or(1).max(1);
    let shape = if n.is_multiple_of(rows) {
        vec![rows as u64, (n / rows) as u64]
    } else {
        vec![n as u64]
    };
    // A bool element is 0 or 1.
    let elems: Vec<u8> = match dtype {
        DType::Bool => elems[..n].iter().map(|b| b & 1).collect(),
        _ => elems[..n * size].to_vec(),
    };
    let t = Tensor::from_bytes(&elems, shape, dtype, name).expect("valid tensor");
    let chunk = cuts.get(1).copied().unwrap_or(64 * 1024);
    let parts = encode_tensor_parts(&t, chunk).unwrap();
    let body: Vec<u8> = parts.concat();
    let back = decode_chunked(&chunks(&body, &cuts)).expect("an encoded tensor decodes");
    assert_eq!(back, t);
    assert_eq!(&decode_tensor(&encode_tensor(&t)).unwrap(), &t);
});
