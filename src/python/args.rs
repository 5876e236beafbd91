//! Integer arguments checked against the range they must fall in.
//!
//! PyO3's own conversion of an out-of-range int raises a bare `OverflowError` from deep
//! inside the call. These helpers raise `quill.OutOfRangeError` instead, naming the
//! argument and its range; the class is an `InvalidArgumentError` (so a `ValueError`),
//! and also the `OverflowError` Python's conversions raise and the `IndexError` its
//! sequences raise, so any of those `except` clauses catches it.

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;

use super::errors::out_of_range;

/// An unsigned integer type an argument converts to.
pub(crate) trait Unsigned: TryFrom<i128> + Copy {
    const MAX: u64;
}

impl Unsigned for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Unsigned for u64 {
    const MAX: u64 = u64::MAX;
}

/// `obj` as an `i128`: any Python int (or `__index__` object) that fits. A bigger one is
/// `Err(None)`; a non-integer is the `TypeError` made by `not_int(its type name)`.
fn int(
    obj: &Bound<'_, PyAny>,
    not_int: impl FnOnce(String) -> String,
) -> Result<i128, Option<PyErr>> {
    obj.extract::<i128>().map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(obj.py()) {
            return None;
        }
        let got = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        Some(PyTypeError::new_err(not_int(got)))
    })
}

/// `obj` as an integer in `0..=max` (at most `T::MAX`); `name` appears in the error.
pub(crate) fn uint_at_most<T: Unsigned>(
    obj: &Bound<'_, PyAny>,
    name: &str,
    max: u64,
) -> PyResult<T> {
    let py = obj.py();
    let range = || format!("{name} must be an integer in 0..={max}");
    let value = match int(obj, |got| format!("{name} must be an int, got {got}")) {
        Ok(v) => v,
        Err(None) => {
            return Err(out_of_range(
                py,
                format!("{}, got {}", range(), short_repr(obj)),
            ))
        }
        Err(Some(type_error)) => return Err(type_error),
    };
    match u64::try_from(value) {
        Ok(v) if v <= max.min(T::MAX) => {
            T::try_from(value).map_err(|_| out_of_range(py, format!("{}, got {value}", range())))
        }
        _ => Err(out_of_range(py, format!("{}, got {value}", range()))),
    }
}

/// `obj` as any value of `T`.
pub(crate) fn uint<T: Unsigned>(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<T> {
    uint_at_most(obj, name, T::MAX)
}

/// `uint` for an optional argument (`None` passes through).
pub(crate) fn opt_uint<T: Unsigned>(
    obj: Option<&Bound<'_, PyAny>>,
    name: &str,
) -> PyResult<Option<T>> {
    obj.filter(|o| !o.is_none())
        .map(|o| uint(o, name))
        .transpose()
}

/// An index into a sequence of `len` items, negative counting from the end.
pub(crate) fn index(obj: &Bound<'_, PyAny>, len: usize, what: &str) -> PyResult<usize> {
    let out = || out_of_range(obj.py(), format!("{what} index out of range"));
    let i = match int(obj, |got| {
        format!("{what} indices must be integers, not {got}")
    }) {
        Ok(v) => v,
        Err(None) => return Err(out()),
        Err(Some(type_error)) => return Err(type_error),
    };
    let len = len as i128;
    let i = if i < 0 { i + len } else { i };
    if (0..len).contains(&i) {
        Ok(i as usize)
    } else {
        Err(out())
    }
}

/// The repr of a value for an error message, cut short (a huge int has a huge repr).
pub(crate) fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let repr = obj.repr().map(|r| r.to_string()).unwrap_or_default();
    if repr.chars().count() > 40 {
        format!("{}…", repr.chars().take(40).collect::<String>())
    } else {
        repr
    }
}

/// Named converters for `#[pyo3(from_py_with = ...)]`, so a signature keeps its literal
/// default (shown by introspection) while a bad value gets a message naming it.
macro_rules! named_uints {
    ($($name:ident: $t:ty),* $(,)?) => {$(
        pub(crate) fn $name(obj: &Bound<'_, PyAny>) -> PyResult<$t> {
            uint(obj, stringify!($name))
        }
    )*};
}

macro_rules! named_opt_uints {
    ($($name:ident: $t:ty),* $(,)?) => {$(
        pub(crate) fn $name(obj: &Bound<'_, PyAny>) -> PyResult<Option<$t>> {
            opt_uint(Some(obj), stringify!($name))
        }
    )*};
}

named_uints!(
    id: u32,
    position: u32,
    max_decoded_size: u64,
    max_retries: u32,
    max_connections: u32,
    total_generated: u32,
    tokens: u64,
    responses: u64,
);
named_opt_uints!(sequence_id: u32, logprob_bits: u32);

pub(crate) fn timeout_ms(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    uint_at_most(obj, "timeout_ms", crate::protocol::MAX_TIMEOUT_MS)
}

pub(crate) fn idle_timeout_ms(obj: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if obj.is_none() {
        return Ok(None);
    }
    uint_at_most(obj, "idle_timeout_ms", crate::protocol::MAX_TIMEOUT_MS).map(Some)
}

/// `http2_keep_alive_interval_ms=`: `None` or 0 turns pings off.
pub(crate) fn http2_keep_alive_interval_ms(obj: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if obj.is_none() {
        return Ok(None);
    }
    let max = crate::protocol::MAX_TIMEOUT_MS;
    uint_at_most(obj, "http2_keep_alive_interval_ms", max).map(Some)
}

pub(crate) fn http2_keep_alive_timeout_ms(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    let max = crate::protocol::MAX_TIMEOUT_MS;
    uint_at_most(obj, "http2_keep_alive_timeout_ms", max)
}

fn http2_window(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<u32>> {
    if obj.is_none() {
        return Ok(None);
    }
    uint_at_most(obj, name, crate::client::MAX_HTTP2_WINDOW.into()).map(Some)
}

pub(crate) fn http2_stream_window(obj: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
    http2_window(obj, "http2_stream_window")
}

pub(crate) fn http2_connection_window(obj: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
    http2_window(obj, "http2_connection_window")
}

/// `timeout_ms=` of one call: `None` keeps the client's timeout.
pub(crate) fn call_timeout_ms(obj: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if obj.is_none() {
        return Ok(None);
    }
    timeout_ms(obj).map(Some)
}

/// `headers=` of one call: a mapping, or an iterable of `(name, value)` pairs, of
/// strings. Names and values are checked by the core, as `set_header` checks them.
pub(crate) fn call_headers(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<(String, String)>>> {
    if obj.is_none() {
        return Ok(None);
    }
    let pairs = if obj.hasattr("items")? {
        obj.call_method0("items")?
    } else {
        obj.clone()
    };
    let not_pairs =
        || PyTypeError::new_err("headers must be a mapping or an iterable of (name, value) pairs");
    let mut out = Vec::new();
    for pair in pairs.try_iter().map_err(|_| not_pairs())? {
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            pair?.extract().map_err(|_| not_pairs())?;
        let name = super::text::string(&name, "a header name")?;
        // The value is never shown: it may be a secret.
        let value = super::text::string(&value, &format!("the value of header {name}"))?;
        out.push((name, value));
    }
    Ok(Some(out))
}

/// `obj` as an integer in `min..=max`; `name` appears in the error.
pub(crate) fn int_in(obj: &Bound<'_, PyAny>, name: &str, min: i128, max: i128) -> PyResult<i128> {
    let range = || format!("{name} must be an integer in {min}..={max}");
    match int(obj, |got| format!("{name} must be an int, got {got}")) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        Ok(v) => Err(out_of_range(obj.py(), format!("{}, got {v}", range()))),
        Err(None) => Err(out_of_range(
            obj.py(),
            format!("{}, got {}", range(), short_repr(obj)),
        )),
        Err(Some(type_error)) => Err(type_error),
    }
}

/// Any iterable of ints (a list, a tuple, a NumPy array), each converted by `item`; a
/// bad element is named by its index (`input_ids[3] must be …`).
fn int_list<T>(
    obj: &Bound<'_, PyAny>,
    name: &str,
    item: impl Fn(&Bound<'_, PyAny>, &str) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    let got = || {
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    };
    if obj.is_instance_of::<pyo3::types::PyString>() || obj.is_instance_of::<pyo3::types::PyBytes>()
    {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an iterable of ints, got {}",
            got()
        )));
    }
    let items = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!("{name} must be an iterable of ints, got {}", got()))
    })?;
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    for (i, element) in items.enumerate() {
        out.push(item(&element?, &format!("{name}[{i}]"))?);
    }
    Ok(out)
}

/// Token ids: each in the `u32` range.
fn id_list(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<u32>> {
    int_list(obj, name, uint)
}

pub(crate) fn input_ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    id_list(obj, "input_ids")
}

pub(crate) fn stop_token_ids(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u32>>> {
    if obj.is_none() {
        return Ok(None);
    }
    id_list(obj, "stop_token_ids").map(Some)
}

/// `layers=` of `embed`: layer indices, negative counting from the last (`int32`).
pub(crate) fn layers(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<i32>>> {
    if obj.is_none() {
        return Ok(None);
    }
    let layer = |o: &Bound<'_, PyAny>, n: &str| {
        int_in(o, n, i32::MIN.into(), i32::MAX.into()).map(|v| v as i32)
    };
    int_list(obj, "layers", layer).map(Some)
}

named_opt_uints!(max_new_tokens: u32, top_k: u32);
