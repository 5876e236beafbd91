//! Body decoding by `Content-Encoding` with a size limit (protocol.md §5), through the
//! one decoder the client (responses) and the bundled server (requests) share:
//! `quill::codec::zstd::{content_coding, BodyDecoder}`, fed in chunks chosen by the
//! input.
//!
//! Two modes, picked by the low two bits of the first byte (round trip when both are
//! set, as it is the slower one):
//! - raw: the rest of the input is the (compressed) body. Checks: no panic; pieces are
//!   at most 64 KiB; an `Ok` body never exceeds the limit; and the result agrees with
//!   libzstd's own streaming decoder (same bytes when both succeed, and ours succeeds
//!   whenever the reference does within the limit).
//! - round trip: a plaintext whose length lands on or near a multiple of the 64 KiB
//!   piece size is compressed (one or two frames, with or without a content-size
//!   field) and must decode to itself; with a limit one byte short it must fail with
//!   `Protocol`.
#![no_main]
// QuillError carries a Problem inline (see lib.rs of quill).
#![allow(clippy::result_large_err)]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use bytes::Bytes;
use quill::codec::zstd::{content_coding, BodyDecoder, Limit};
use quill::QuillError;
use quill_fuzz::{chunks, take_cuts};

const PIECE: usize = 64 * 1024;

const ENCODINGS: [Option<&str>; 8] = [
    Some("zstd"),
    Some("zstd"),
    None,
    Some("identity"),
    Some("identity, ZSTD"),
    Some("gzip"),
    Some("zstd, zstd"),
    Some(""),
];

/// Decodes exactly as a call does: the coding from the header, pieces pulled after
/// each received chunk, `finish` at the end.
fn decode_body(enc: Option<&str>, pieces: &[&[u8]], limit: Option<u64>) -> Result<Vec<Bytes>, QuillError> {
    let coding = content_coding(enc.map(str::as_bytes))?;
    let limit = limit.map(|bytes| Limit { bytes, setting: "fuzz" });
    let mut decoder = BodyDecoder::new(coding, limit)?;
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(Bytes::copy_from_slice(piece));
        while let Some(p) = decoder.next_output()? {
            out.push(p);
        }
    }
    decoder.finish()?;
    Ok(out)
}

fn decode(enc: Option<&str>, pieces: &[&[u8]], limit: Option<u64>) -> Result<Vec<u8>, QuillError> {
    let out = decode_body(enc, pieces, limit)?;
    assert!(out.iter().all(|p| p.len() <= PIECE), "oversized piece");
    let body = out.concat();
    if let Some(limit) = limit {
        assert!(body.len() as u64 <= limit, "Ok body over the limit");
    }
    Ok(body)
}

/// libzstd's streaming decoder (all frames), reading at most `cap` bytes.
fn reference(body: &[u8], cap: u64) -> Option<Vec<u8>> {
    let dec = zstd::stream::read::Decoder::with_buffer(body).ok()?;
    let mut out = Vec::new();
    dec.take(cap).read_to_end(&mut out).ok()?;
    Some(out)
}

fn compress(plain: &[u8], level: i32, with_size: bool) -> Vec<u8> {
    if with_size {
        zstd::bulk::compress(plain, level).unwrap()
    } else {
        zstd::stream::encode_all(plain, level).unwrap()
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let (cuts, data) = take_cuts(rest);

    if mode & 0x03 != 0x03 {
        let enc = ENCODINGS[usize::from(mode >> 2) % ENCODINGS.len()];
        let limit = match mode >> 5 {
            0 | 1 => None,
            2 => Some(0),
            l => Some(u64::from(l) * 4099),
        };
        let ours = decode(enc, &chunks(data, &cuts), limit);
        let zstd = match enc {
            Some(e) => e.to_ascii_lowercase().contains("zstd"),
            None => false,
        };
        if enc.is_some_and(|e| e.contains("gzip") || e == "zstd, zstd") {
            assert!(ours.is_err(), "unsupported encoding accepted");
            return;
        }
        if !zstd {
            match limit {
                Some(l) if data.len() as u64 > l => assert!(ours.is_err()),
                _ => assert_eq!(ours.as_deref(), Ok(data)),
            }
            return;
        }
        // Cap the reference one byte past our limit (or at 16 MiB) so a bomb stays cheap.
        let cap = limit.map_or(16 << 20, |l| l + 1);
        // An empty body is an empty message by design (protocol.md §2), though libzstd
        // calls zero bytes an incomplete frame.
        let expected = if data.is_empty() {
            Some(Vec::new())
        } else {
            reference(data, cap)
        };
        match (&ours, &expected) {
            (Ok(a), Some(b)) => assert_eq!(a, b, "differs from libzstd"),
            (Ok(a), None) => panic!("accepted a body libzstd refuses ({} bytes out)", a.len()),
            (Err(e), Some(b)) if (b.len() as u64) < cap => {
                panic!("refused a body libzstd decodes ({} bytes): {e}", b.len())
            }
            (Err(_), _) => {}
        }
        return;
    }

    // Round trip. Length: k × 64 KiB + delta, delta in -3..=3 (clamped at 0).
    let k = usize::from(mode >> 2 & 0x03);
    let delta = i64::from(mode >> 4 & 0x07) - 3;
    let len = (k as i64 * PIECE as i64 + delta).max(0) as usize;
    let pattern: &[u8] = if data.is_empty() { &[0] } else { data };
    let plain: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
    let level = 1 + (cuts.len() & 1) as i32;
    let two_frames = mode & 0x80 != 0;
    let with_size = cuts.len() & 2 == 0;
    let mut body = Vec::new();
    if two_frames {
        let cut = cuts.first().map_or(len / 2, |c| (c * 977).min(len));
        body.extend(compress(&plain[..cut], level, with_size));
        body.extend(compress(&plain[cut..], level, !with_size));
    } else {
        body.extend(compress(&plain, level, with_size));
    }
    let pieces = chunks(&body, &cuts);
    let got = decode(Some("zstd"), &pieces, None).expect("a compressed body decodes");
    assert!(got == plain, "round trip of {len} bytes differs");
    let got = decode(Some("zstd"), &pieces, Some(len as u64)).expect("exactly at the limit");
    assert!(got == plain);
    if len > 0 {
        let e = decode(Some("zstd"), &pieces, Some(len as u64 - 1)).unwrap_err();
        assert!(matches!(e, QuillError::Protocol { .. }), "{e}");
    }
});
