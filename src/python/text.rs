//! `str` arguments, which the core takes as UTF-8.
//!
//! A Python `str` may hold a lone surrogate (`"\ud800"`), which no UTF-8 encoding has.
//! PyO3's own conversion then raises `UnicodeEncodeError`, a builtin that names no
//! argument and carries the whole string in `e.object`: for an API key, a leak into
//! every error tracker. These helpers raise `quill.InvalidArgumentError` instead,
//! naming the argument and never quoting the value, with no cause or context.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::errors::to_py_err;
use crate::error::QuillError;

/// The UTF-8 text of `s`, the argument `name`.
pub(crate) fn utf8<'a>(s: &'a Bound<'_, PyString>, name: &str) -> PyResult<&'a str> {
    s.to_str().map_err(|_| {
        to_py_err(QuillError::invalid(format!(
            "{name} cannot be encoded as UTF-8: it holds a lone surrogate"
        )))
    })
}

/// `obj`, the argument `name`, as UTF-8 text; a non-`str` is a `TypeError`.
pub(crate) fn string(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    let s = obj.cast::<PyString>().map_err(|_| {
        let got = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!("{name} must be str, got {got}"))
    })?;
    utf8(s, name).map(str::to_owned)
}

/// `string` for an optional argument (`None` passes through).
pub(crate) fn opt_string(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<String>> {
    if obj.is_none() {
        return Ok(None);
    }
    string(obj, name).map(Some)
}

/// Named converters for `#[pyo3(from_py_with = ...)]`: the function's name is the
/// argument's, shown in the error.
macro_rules! named_texts {
    ($($name:ident),* $(,)?) => {$(
        pub(crate) fn $name(obj: &Bound<'_, PyAny>) -> PyResult<String> {
            string(obj, stringify!($name))
        }
    )*};
}

/// As `named_texts`, for optional arguments: `opt_x` converts the argument `x`.
macro_rules! named_opt_texts {
    ($($fn_name:ident => $name:literal),* $(,)?) => {$(
        pub(crate) fn $fn_name(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
            opt_string(obj, $name)
        }
    )*};
}

named_texts!(
    base_url,
    service,
    method,
    http_version,
    token,
    key,
    name,
    value,
    text,
    reason,
    device,
);

named_opt_texts!(
    opt_name => "name",
    opt_text => "text",
    opt_header_name => "header_name",
    opt_pool_strategy => "pool_strategy",
    opt_tls_server_name => "tls_server_name",
    opt_user_agent => "user_agent",
    opt_finish_reason => "finish_reason",
    opt_default => "default",
);
