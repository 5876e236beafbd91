//! `Token::decode` and `TokenBatch::decode` (protocol.md §8) on arbitrary bytes, and
//! round trips of tokens and batches built from the input.
//!
//! Checks: no panic; whatever decodes re-encodes to the same bytes (up to unknown flag
//! bits, which decoding drops) and decodes back to itself (logprobs compared bit for
//! bit, so NaN payloads count too); built tokens and batches survive
//! `decode(encode(x)) == x`.
#![no_main]

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use quill::{Token, TokenBatch};

/// `Token` equality with logprobs compared by bits (`NaN != NaN` under `PartialEq`).
fn same_token(a: &Token, b: &Token) -> bool {
    a.id == b.id
        && a.position == b.position
        && a.text == b.text
        && a.is_special == b.is_special
        && a.logprob.map(f32::to_bits) == b.logprob.map(f32::to_bits)
}

fn same_batch(a: &TokenBatch, b: &TokenBatch) -> bool {
    a.sequence_id == b.sequence_id
        && a.is_final == b.is_final
        && a.tokens.len() == b.tokens.len()
        && a.tokens
            .iter()
            .zip(&b.tokens)
            .all(|(x, y)| same_token(x, y))
}

fn token(u: &mut Unstructured<'_>) -> ArbResult<Token> {
    Ok(Token {
        id: u.arbitrary()?,
        position: u.arbitrary()?,
        text: u.arbitrary()?,
        logprob: if u.arbitrary()? {
            Some(f32::from_bits(u.arbitrary()?))
        } else {
            None
        },
        is_special: u.arbitrary()?,
    })
}

fn batch(u: &mut Unstructured<'_>) -> ArbResult<TokenBatch> {
    let n = u.int_in_range(0..=40)?;
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        tokens.push(token(u)?);
    }
    Ok(TokenBatch {
        tokens,
        sequence_id: u.arbitrary()?,
        is_final: u.arbitrary()?,
        ..TokenBatch::default()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Token::decode(data) {
        let enc = t.encode().expect("a decoded token encodes");
        let mut canonical = data.to_vec();
        canonical[8] &= 0x07; // only has-text, has-logprob and is-special are kept
        assert_eq!(enc, canonical);
        assert!(same_token(&Token::decode(&enc).unwrap(), &t));
    }
    if let Ok(b) = TokenBatch::decode(data) {
        assert!(b.tokens.len() <= data.len() / 9);
        let enc = b.encode().expect("a decoded batch encodes");
        assert_eq!(enc.len(), data.len());
        assert_eq!(enc[0], data[0] & 0x03);
        let back = TokenBatch::decode(&enc).unwrap();
        assert!(same_batch(&back, &b));
        assert_eq!(back.encode().unwrap(), enc);
    }

    let mut u = Unstructured::new(data);
    if let Ok(t) = token(&mut u) {
        let enc = t.encode().expect("text of a fuzz input is short");
        assert!(same_token(&Token::decode(&enc).unwrap(), &t));
    }
    if let Ok(b) = batch(&mut u) {
        let enc = b.encode().expect("small batch encodes");
        let back = TokenBatch::decode(&enc).unwrap();
        assert!(same_batch(&back, &b), "{b:?} vs {back:?}");
        assert_eq!(back.text(), b.text());
    }
});
