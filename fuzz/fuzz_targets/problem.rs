//! `Problem::from_response` (RFC 7807, protocol.md §4) with any status, content type,
//! `Retry-After` and body: it must never fail or panic, keep the HTTP status, cap the
//! body text, and format (`Display`, `Debug`) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quill::Problem;

const CONTENT_TYPES: [&str; 5] = [
    "application/problem+json",
    "application/json; charset=utf-8",
    "text/html",
    "text/plain",
    "",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]);
    let sel = data[2];
    let ra_len = usize::from(data[3] & 0x1f).min(data.len() - 4);
    let (retry_after, body) = data[4..].split_at(ra_len);
    let retry_after = String::from_utf8_lossy(retry_after);
    // Either a known content type, none, or the first bytes of the body as one.
    let owned;
    let content_type = match sel % 7 {
        5 => None,
        6 => {
            owned = String::from_utf8_lossy(&body[..body.len().min(24)]).into_owned();
            Some(owned.as_str())
        }
        i => Some(CONTENT_TYPES[usize::from(i)]),
    };
    let p = Problem::from_response(status, content_type, body)
        .with_retry_after((sel & 0x80 != 0).then_some(&*retry_after));
    assert_eq!(p.status, status);
    // Lossy UTF-8 turns each bad byte into a 3-byte U+FFFD at most.
    assert!(p.body.len() <= 3 * 8 * 1024);
    let shown = p.to_string();
    assert!(shown.starts_with(&format!("HTTP {status}")));
    let _ = format!("{p:?}");
    let _ = p.is_retryable();
});
