//! `quill.Token` and `quill.TokenBatch`: Python faces of the core token types.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use super::args;
use super::errors::IntoPyResult;
use super::tensor::bytes_like;
use super::text;
use crate::token::{Token, TokenBatch};

/// f32 logprobs printed as the short decimal a user typed (-0.1, not -0.10000000149…).
fn f32_to_py(v: f32) -> f64 {
    format!("{v}").parse().unwrap_or(v as f64)
}

/// One generated token.
#[pyclass(name = "Token", module = "quill", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyToken(pub Token);

#[pymethods]
impl PyToken {
    #[new]
    #[pyo3(signature = (id, position=0, text=None, logprob=None, is_special=false))]
    fn new(
        #[pyo3(from_py_with = args::id)] id: u32,
        #[pyo3(from_py_with = args::position)] position: u32,
        #[pyo3(from_py_with = text::opt_text)] text: Option<String>,
        logprob: Option<f32>,
        is_special: bool,
    ) -> Self {
        PyToken(Token {
            id,
            position,
            text,
            logprob,
            is_special,
        })
    }

    /// `Token.with_text(id, text, position, logprob=None)`.
    #[staticmethod]
    #[pyo3(signature = (id, text, position=0, logprob=None, is_special=false))]
    fn with_text(
        #[pyo3(from_py_with = args::id)] id: u32,
        #[pyo3(from_py_with = text::text)] text: String,
        #[pyo3(from_py_with = args::position)] position: u32,
        logprob: Option<f32>,
        is_special: bool,
    ) -> Self {
        let mut t = Token::with_text(id, text, position, logprob);
        t.is_special = is_special;
        PyToken(t)
    }

    /// Decodes one token (protocol §8); leftover bytes are an error.
    #[staticmethod]
    fn decode(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        bytes_like(py, data, Token::decode).map(PyToken)
    }

    /// Rebuilds a pickled token; the logprob travels as its bits, so it is exact.
    #[staticmethod]
    fn _from_state(
        #[pyo3(from_py_with = args::id)] id: u32,
        #[pyo3(from_py_with = args::position)] position: u32,
        #[pyo3(from_py_with = text::opt_text)] text: Option<String>,
        #[pyo3(from_py_with = args::logprob_bits)] logprob_bits: Option<u32>,
        is_special: bool,
    ) -> Self {
        PyToken(Token {
            id,
            position,
            text,
            logprob: logprob_bits.map(f32::from_bits),
            is_special,
        })
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let t = &self.0;
        let restore = py.get_type::<PyToken>().getattr("_from_state")?;
        let args = (
            t.id,
            t.position,
            t.text.clone(),
            t.logprob.map(f32::to_bits),
            t.is_special,
        );
        (restore, args).into_pyobject(py)
    }

    /// Immutable: a copy is the same object.
    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf
    }

    #[getter]
    fn id(&self) -> u32 {
        self.0.id
    }
    #[getter]
    fn position(&self) -> u32 {
        self.0.position
    }
    #[getter]
    fn text(&self) -> Option<&str> {
        self.0.text.as_deref()
    }
    #[getter]
    fn logprob(&self) -> Option<f64> {
        self.0.logprob.map(f32_to_py)
    }
    #[getter]
    fn is_special(&self) -> bool {
        self.0.is_special
    }

    /// `exp(logprob)`, or None without a logprob.
    fn prob(&self) -> Option<f64> {
        self.0.prob()
    }

    /// Whether this is a special end-of-sequence token.
    fn is_eos(&self) -> bool {
        self.0.is_eos()
    }

    /// `{"id", "text", "logprob", "position", "is_special"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", self.0.id)?;
        d.set_item("text", self.text())?;
        d.set_item("logprob", self.logprob())?;
        d.set_item("position", self.0.position)?;
        d.set_item("is_special", self.0.is_special)?;
        Ok(d)
    }

    /// A token from its dict form.
    #[staticmethod]
    fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Self> {
        let get = |k: &str| d.get_item(k);
        let id =
            args::id(&get("id")?.ok_or_else(|| PyTypeError::new_err("token dict needs an 'id'"))?)?;
        let opt = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
            Ok(get(k)?.filter(|v| !v.is_none()))
        };
        Ok(PyToken(Token {
            id,
            position: opt("position")?
                .map(|v| args::position(&v))
                .transpose()?
                .unwrap_or(0),
            text: opt("text")?.map(|v| text::string(&v, "text")).transpose()?,
            logprob: opt("logprob")?.map(|v| v.extract()).transpose()?,
            is_special: opt("is_special")?
                .map(|v| v.extract())
                .transpose()?
                .unwrap_or(false),
        }))
    }

    /// The binary encoding of protocol §8.
    fn encode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.encode().py()?))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyToken>().is_ok_and(|o| o.get().0 == self.0)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.0.hash(&mut h);
        h.finish()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let text = match &self.0.text {
            Some(t) => t.into_pyobject(py)?.repr()?.to_string(),
            None => "None".into(),
        };
        let logprob = match self.logprob() {
            Some(l) => l.into_pyobject(py)?.repr()?.to_string(),
            None => "None".into(),
        };
        Ok(format!(
            "Token(id={}, position={}, text={text}, logprob={logprob}, is_special={})",
            self.0.id,
            self.0.position,
            if self.0.is_special { "True" } else { "False" }
        ))
    }
}

/// A batch's metadata from a pickle: a dict of `str` to `str`, UTF-8 both.
fn metadata(obj: &Bound<'_, PyAny>) -> PyResult<std::collections::HashMap<String, String>> {
    let dict = obj
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("TokenBatch metadata must be a dict of str to str"))?;
    dict.iter()
        .map(|(k, v)| {
            let key = text::string(&k, "a metadata key")?;
            let value = text::string(&v, &format!("metadata {key:?}"))?;
            Ok((key, value))
        })
        .collect()
}

/// A batch of tokens of one sequence.
#[pyclass(name = "TokenBatch", module = "quill")]
#[derive(Clone)]
pub struct PyTokenBatch(pub TokenBatch);

#[pymethods]
impl PyTokenBatch {
    #[new]
    #[pyo3(signature = (sequence_id=None, is_final=false))]
    fn new(
        #[pyo3(from_py_with = args::sequence_id)] sequence_id: Option<u32>,
        is_final: bool,
    ) -> Self {
        let mut b = TokenBatch::new(sequence_id);
        b.is_final = is_final;
        PyTokenBatch(b)
    }

    /// A batch holding `tokens`.
    #[staticmethod]
    #[pyo3(signature = (tokens, sequence_id=None, is_final=false))]
    fn from_tokens(
        tokens: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = args::sequence_id)] sequence_id: Option<u32>,
        is_final: bool,
    ) -> PyResult<Self> {
        let mut b = TokenBatch::new(sequence_id);
        b.is_final = is_final;
        for t in tokens.try_iter()? {
            let t = t?;
            let Ok(tok) = t.cast::<PyToken>() else {
                let got = t.get_type().name()?;
                return Err(PyTypeError::new_err(format!(
                    "TokenBatch holds quill.Token objects, got {got}"
                )));
            };
            b.tokens.push(tok.get().0.clone());
        }
        Ok(PyTokenBatch(b))
    }

    /// Decodes one batch (protocol §8); leftover bytes are an error.
    #[staticmethod]
    fn decode(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        bytes_like(py, data, TokenBatch::decode).map(PyTokenBatch)
    }

    /// Rebuilds a pickled batch, metadata included.
    #[staticmethod]
    fn _from_state(
        tokens: Vec<PyToken>,
        #[pyo3(from_py_with = args::sequence_id)] sequence_id: Option<u32>,
        is_final: bool,
        #[pyo3(from_py_with = metadata)] metadata: std::collections::HashMap<String, String>,
    ) -> Self {
        PyTokenBatch(TokenBatch {
            tokens: tokens.into_iter().map(|t| t.0).collect(),
            sequence_id,
            is_final,
            metadata,
        })
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let b = &self.0;
        let restore = py.get_type::<PyTokenBatch>().getattr("_from_state")?;
        let tokens: Vec<PyToken> = b.tokens.iter().cloned().map(PyToken).collect();
        let args = (tokens, b.sequence_id, b.is_final, b.metadata.clone());
        (restore, args).into_pyobject(py)
    }

    /// A new, independent batch (its tokens are immutable, so shallow and deep agree).
    fn __copy__(&self) -> Self {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.clone()
    }

    /// Appends a token.
    fn add(&mut self, token: PyRef<'_, PyToken>) {
        self.0.tokens.push(token.0.clone());
    }

    #[getter]
    fn sequence_id(&self) -> Option<u32> {
        self.0.sequence_id
    }
    #[setter]
    fn set_sequence_id(&mut self, #[pyo3(from_py_with = args::sequence_id)] v: Option<u32>) {
        self.0.sequence_id = v;
    }
    #[getter]
    fn is_final(&self) -> bool {
        self.0.is_final
    }
    #[setter]
    fn set_is_final(&mut self, v: bool) {
        self.0.is_final = v;
    }
    /// The tokens, as a new list.
    #[getter]
    fn tokens(&self) -> Vec<PyToken> {
        self.0.tokens.iter().cloned().map(PyToken).collect()
    }
    /// A copy of the metadata.
    #[getter(metadata)]
    fn metadata_map(&self) -> std::collections::HashMap<String, String> {
        self.0.metadata.clone()
    }

    fn is_empty(&self) -> bool {
        self.0.tokens.is_empty()
    }
    fn text(&self) -> String {
        self.0.text()
    }
    fn token_ids(&self) -> Vec<u32> {
        self.0.token_ids()
    }
    fn positions(&self) -> Vec<u32> {
        self.0.positions()
    }

    fn set_metadata(
        &mut self,
        #[pyo3(from_py_with = text::key)] key: String,
        #[pyo3(from_py_with = text::value)] value: String,
    ) {
        self.0.metadata.insert(key, value);
    }

    #[pyo3(signature = (key, default=None))]
    fn get_metadata(
        &self,
        #[pyo3(from_py_with = text::key)] key: String,
        #[pyo3(from_py_with = text::opt_default)] default: Option<String>,
    ) -> Option<String> {
        self.0.metadata.get(&key).cloned().or(default)
    }

    /// The binary encoding of protocol §8 (metadata is not encoded).
    fn encode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0.encode().py()?))
    }

    /// `{"sequence_id", "is_final", "tokens": [token dicts], "metadata"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("sequence_id", self.0.sequence_id)?;
        d.set_item("is_final", self.0.is_final)?;
        let tokens = self
            .0
            .tokens
            .iter()
            .map(|t| PyToken(t.clone()).to_dict(py))
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("tokens", tokens)?;
        d.set_item("metadata", self.metadata_map())?;
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.0.tokens.len()
    }

    fn __getitem__(&self, index: &Bound<'_, PyAny>) -> PyResult<PyToken> {
        let i = args::index(index, self.0.tokens.len(), "TokenBatch")?;
        Ok(PyToken(self.0.tokens[i].clone()))
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyTokenBatchIter {
        // Iterate over a snapshot so adding tokens during the loop cannot invalidate it.
        PyTokenBatchIter {
            tokens: slf.0.tokens.clone(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyTokenBatch>()
            .is_ok_and(|o| o.try_borrow().is_ok_and(|o| o.0 == self.0))
    }

    fn __repr__(&self) -> String {
        format!(
            "TokenBatch(sequence_id={}, is_final={}, tokens={}, text={:?})",
            self.0.sequence_id.map_or("None".into(), |s| s.to_string()),
            if self.0.is_final { "True" } else { "False" },
            self.0.tokens.len(),
            self.0.text().chars().take(60).collect::<String>()
        )
    }
}

/// Iterator over a snapshot of a batch's tokens.
#[pyclass(name = "TokenBatchIterator", module = "quill", frozen)]
pub struct PyTokenBatchIter {
    tokens: Vec<Token>,
    next: std::sync::atomic::AtomicUsize,
}

#[pymethods]
impl PyTokenBatchIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self) -> Option<PyToken> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tokens.get(i).cloned().map(PyToken)
    }
}
