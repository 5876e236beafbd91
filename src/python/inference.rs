//! The typed `quill.inference.v1` API for Python: `GenerateRequest`, `GenerateResponse`,
//! `StreamTiming` and `GenerateStream` (a `Stream` of responses with timing, `batches()`
//! and `text()`), and the bodies of `QuillClient.generate`/`chat`/`embed`. Requests are
//! encoded, responses decoded, checked and timed by the core (`crate::inference`).

use bytes::Bytes;
use prost::Message;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyTuple};

use super::args;
use super::client::{call_options, PyQuillClient};
use super::errors::IntoPyResult;
use super::stream::{pump_encoded, PyStream, StreamKind};
use super::tensor::PyTensor;
use super::token::PyTokenBatch;
use super::{exit, text, wait};
use crate::client::{Call, Reply};
use crate::inference::{
    chat_call, embed_call, embeddings_from_reply, generate_call, EmbedRequest, GenerateRequest,
    GenerateResponse, StreamTiming,
};

/// `quill.inference.v1.GenerateRequest`: what `QuillClient.chat` sends per turn (the
/// keyword arguments of `QuillClient.generate`). Unset settings take the server's
/// defaults.
#[pyclass(name = "GenerateRequest", module = "quill", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyGenerateRequest(pub(crate) GenerateRequest);

#[pymethods]
impl PyGenerateRequest {
    #[new]
    #[pyo3(signature = (input_ids, *, max_new_tokens=None, temperature=None, top_p=None,
        top_k=None, stop_token_ids=None, repetition_penalty=None, stream_embeddings=false))]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        #[pyo3(from_py_with = args::input_ids)] input_ids: Vec<u32>,
        #[pyo3(from_py_with = args::max_new_tokens)] max_new_tokens: Option<u32>,
        temperature: Option<f32>,
        top_p: Option<f32>,
        #[pyo3(from_py_with = args::top_k)] top_k: Option<u32>,
        #[pyo3(from_py_with = args::stop_token_ids)] stop_token_ids: Option<Vec<u32>>,
        repetition_penalty: Option<f32>,
        stream_embeddings: bool,
    ) -> Self {
        PyGenerateRequest(GenerateRequest {
            input_ids,
            max_new_tokens,
            temperature,
            top_p,
            top_k,
            stream_embeddings,
            stop_token_ids: stop_token_ids.unwrap_or_default(),
            repetition_penalty,
        })
    }

    #[getter]
    fn input_ids(&self) -> Vec<u32> {
        self.0.input_ids.clone()
    }
    #[getter]
    fn max_new_tokens(&self) -> Option<u32> {
        self.0.max_new_tokens
    }
    #[getter]
    fn temperature(&self) -> Option<f32> {
        self.0.temperature
    }
    #[getter]
    fn top_p(&self) -> Option<f32> {
        self.0.top_p
    }
    #[getter]
    fn top_k(&self) -> Option<u32> {
        self.0.top_k
    }
    #[getter]
    fn stop_token_ids(&self) -> Vec<u32> {
        self.0.stop_token_ids.clone()
    }
    #[getter]
    fn repetition_penalty(&self) -> Option<f32> {
        self.0.repetition_penalty
    }
    #[getter]
    fn stream_embeddings(&self) -> bool {
        self.0.stream_embeddings
    }

    /// The protobuf encoding (what goes on the wire).
    fn encode(&self) -> Vec<u8> {
        self.0.encode_to_vec()
    }

    /// Rebuilds a pickled request from its protobuf encoding.
    #[staticmethod]
    fn _from_encoded(data: &[u8]) -> PyResult<Self> {
        GenerateRequest::decode(data)
            .map(PyGenerateRequest)
            .map_err(|e| crate::QuillError::decode(format!("invalid pickled GenerateRequest: {e}")))
            .py()
    }

    /// Pickles as its protobuf encoding: every field, the floats bit for bit.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let restore = py
            .get_type::<PyGenerateRequest>()
            .getattr("_from_encoded")?;
        let data = PyBytes::new(py, &self.0.encode_to_vec());
        (restore, (data,)).into_pyobject(py)
    }

    /// Immutable: a copy is the same object.
    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf
    }

    fn __repr__(&self) -> String {
        format!("GenerateRequest({:?})", self.0)
    }
}

/// A chat item: a `GenerateRequest`, or a dict of its keyword arguments.
fn encode_chat_item(py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let request = match item.cast::<PyGenerateRequest>() {
        Ok(r) => r.get().0.clone(),
        Err(_) => {
            let dict = item.cast::<PyDict>().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err(format!(
                    "chat requests must be GenerateRequest objects or dicts of its arguments, got {}",
                    item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
            })?;
            let made = py
                .get_type::<PyGenerateRequest>()
                .call((), Some(dict))?
                .cast_into::<PyGenerateRequest>()?;
            made.get().0.clone()
        }
    };
    Ok(request.encode_to_vec().into())
}

/// One response of a generate or chat stream.
#[pyclass(name = "GenerateResponse", module = "quill", frozen)]
pub struct PyGenerateResponse {
    /// The new tokens (`sequence_id` tells chat generations apart).
    #[pyo3(get)]
    tokens: Py<PyTokenBatch>,
    /// One flag per token, or empty when the server sent none.
    #[pyo3(get)]
    attention_mask: Py<PyList>,
    /// The embedding streamed with these tokens (`stream_embeddings`), or None.
    #[pyo3(get)]
    embedding: Option<Py<PyTensor>>,
    #[pyo3(get)]
    total_generated: u32,
    #[pyo3(get)]
    is_complete: bool,
    #[pyo3(get)]
    finish_reason: Option<String>,
}

impl PyGenerateResponse {
    pub(crate) fn wrap(py: Python<'_>, r: GenerateResponse) -> PyResult<PyGenerateResponse> {
        Ok(PyGenerateResponse {
            tokens: Py::new(py, PyTokenBatch(r.tokens))?,
            attention_mask: PyList::new(py, r.attention_mask)?.unbind(),
            embedding: r
                .embedding
                .map(|t| Py::new(py, PyTensor::wrap(crate::Tensor::clone(&t))))
                .transpose()?,
            total_generated: r.total_generated,
            is_complete: r.is_complete,
            finish_reason: r.finish_reason,
        })
    }
}

#[pymethods]
impl PyGenerateResponse {
    /// Rebuilds a response from its fields (`__reduce__`): the token batch, mask list
    /// and tensor objects are taken as they are, so `copy.copy` shares them and
    /// `copy.deepcopy` (which copies the arguments first) does not.
    #[staticmethod]
    fn _from_state(
        tokens: Py<PyTokenBatch>,
        attention_mask: Bound<'_, PyList>,
        embedding: Option<Py<PyTensor>>,
        #[pyo3(from_py_with = args::total_generated)] total_generated: u32,
        is_complete: bool,
        #[pyo3(from_py_with = text::opt_finish_reason)] finish_reason: Option<String>,
    ) -> PyResult<Self> {
        if !attention_mask
            .iter()
            .all(|flag| flag.is_instance_of::<PyBool>())
        {
            return Err(PyTypeError::new_err(
                "a GenerateResponse's attention_mask holds bools",
            ));
        }
        Ok(PyGenerateResponse {
            tokens,
            attention_mask: attention_mask.unbind(),
            embedding,
            total_generated,
            is_complete,
            finish_reason,
        })
    }

    /// Pickles as its fields; the embedding tensor pickles as tensors do (out of band
    /// with protocol 5).
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let restore = py.get_type::<PyGenerateResponse>().getattr("_from_state")?;
        let args = (
            self.tokens.clone_ref(py),
            self.attention_mask.clone_ref(py),
            self.embedding.as_ref().map(|e| e.clone_ref(py)),
            self.total_generated,
            self.is_complete,
            self.finish_reason.clone(),
        );
        (restore, args).into_pyobject(py)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = other.py();
        let Ok(other) = other.cast::<PyGenerateResponse>() else {
            return Ok(false);
        };
        let o = other.get();
        let same_embedding = match (&self.embedding, &o.embedding) {
            (None, None) => true,
            (Some(a), Some(b)) => a.get().inner == b.get().inner,
            _ => false,
        };
        Ok(self.total_generated == o.total_generated
            && self.is_complete == o.is_complete
            && self.finish_reason == o.finish_reason
            && same_embedding
            && self.tokens.bind(py).eq(o.tokens.bind(py))?
            && self.attention_mask.bind(py).eq(o.attention_mask.bind(py))?)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "GenerateResponse(tokens=<{} tokens>, total_generated={}, is_complete={}, finish_reason={})",
            self.tokens.borrow(py).0.tokens.len(),
            self.total_generated,
            if self.is_complete { "True" } else { "False" },
            self.finish_reason
                .as_ref()
                .map_or("None".to_owned(), |r| format!("'{r}'"))
        )
    }
}

/// Timing of a generate or chat stream, in milliseconds from the start of the call:
/// time to first token, inter-token latency p50/p99 (per token: a response of n tokens
/// arriving d after the previous one counts n gaps of d/n) and tokens per second over
/// the whole call. None until a token arrived.
#[pyclass(name = "StreamTiming", module = "quill", frozen, get_all, eq)]
#[derive(Clone, PartialEq)]
pub struct PyStreamTiming {
    tokens: u64,
    responses: u64,
    time_to_first_token_ms: Option<f64>,
    inter_token_p50_ms: Option<f64>,
    inter_token_p99_ms: Option<f64>,
    elapsed_ms: Option<f64>,
    tokens_per_second: Option<f64>,
}

impl From<StreamTiming> for PyStreamTiming {
    fn from(t: StreamTiming) -> Self {
        PyStreamTiming {
            tokens: t.tokens,
            responses: t.responses,
            time_to_first_token_ms: t.time_to_first_token_ms,
            inter_token_p50_ms: t.inter_token_p50_ms,
            inter_token_p99_ms: t.inter_token_p99_ms,
            elapsed_ms: t.elapsed_ms,
            tokens_per_second: t.tokens_per_second,
        }
    }
}

#[pymethods]
impl PyStreamTiming {
    /// Rebuilds a pickled timing (`__reduce__`).
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn _from_state(
        #[pyo3(from_py_with = args::tokens)] tokens: u64,
        #[pyo3(from_py_with = args::responses)] responses: u64,
        time_to_first_token_ms: Option<f64>,
        inter_token_p50_ms: Option<f64>,
        inter_token_p99_ms: Option<f64>,
        elapsed_ms: Option<f64>,
        tokens_per_second: Option<f64>,
    ) -> Self {
        PyStreamTiming {
            tokens,
            responses,
            time_to_first_token_ms,
            inter_token_p50_ms,
            inter_token_p99_ms,
            elapsed_ms,
            tokens_per_second,
        }
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let restore = py.get_type::<PyStreamTiming>().getattr("_from_state")?;
        let args = (
            self.tokens,
            self.responses,
            self.time_to_first_token_ms,
            self.inter_token_p50_ms,
            self.inter_token_p99_ms,
            self.elapsed_ms,
            self.tokens_per_second,
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

    fn __repr__(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("None".to_owned(), |v| format!("{v:.3}"));
        format!(
            "StreamTiming(tokens={}, time_to_first_token_ms={}, inter_token_p50_ms={}, \
             inter_token_p99_ms={}, tokens_per_second={})",
            self.tokens,
            ms(self.time_to_first_token_ms),
            ms(self.inter_token_p50_ms),
            ms(self.inter_token_p99_ms),
            self.tokens_per_second
                .map_or("None".to_owned(), |v| format!("{v:.0}")),
        )
    }
}

/// A `Stream` of `GenerateResponse`s with `timing`, `batches()` and `text()`.
/// Leaving the loop early or `close()` cancels the call, so the server stops.
#[pyclass(name = "GenerateStream", module = "quill", frozen, extends = PyStream)]
pub struct PyGenerateStream;

impl PyGenerateStream {
    fn open(
        py: Python<'_>,
        client: &PyQuillClient,
        call: Call,
        chat: bool,
        eager: bool,
    ) -> PyResult<Py<PyGenerateStream>> {
        let base = PyStream::open(py, client, call, StreamKind::Generate { chat }, eager)?;
        Py::new(py, (PyGenerateStream, base))
    }
}

#[pymethods]
impl PyGenerateStream {
    /// Timing so far; final once the stream ended.
    #[getter]
    fn timing(slf: &Bound<'_, Self>) -> Option<PyStreamTiming> {
        slf.as_super().get().timing().map(PyStreamTiming::from)
    }

    /// The same stream yielding only each response's `TokenBatch`.
    fn batches(slf: &Bound<'_, Self>) -> PyStream {
        slf.as_super().get().batches()
    }

    /// Reads the rest of the stream and returns the text of its tokens.
    fn text(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let _inside = exit::enter(py);
        let base = slf.as_super().get();
        wait::block_on(py, &base.handle()?, base.text_future())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        format!("GenerateStream('{}')", slf.as_super().get().path())
    }

    /// `await stream.text_async()`: `text()` for asyncio.
    fn text_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let _inside = exit::enter(py);
        let base = slf.as_super().get();
        wait::to_asyncio(py, &base.handle()?, base.text_future(), |py, text| {
            Ok(text.into_pyobject(py)?.into_any())
        })
    }
}

/// `QuillClient.generate` (`eager`) and `generate_async`.
pub(crate) fn generate(
    py: Python<'_>,
    client: &PyQuillClient,
    request: &PyGenerateRequest,
    timeout_ms: Option<u64>,
    headers: Option<Vec<(String, String)>>,
    eager: bool,
) -> PyResult<Py<PyGenerateStream>> {
    let _inside = exit::enter(py);
    let call = call_options(generate_call(&request.0), timeout_ms, headers);
    PyGenerateStream::open(py, client, call, false, eager)
}

/// `QuillClient.chat`: `requests` is an iterable of `GenerateRequest`s or dicts.
pub(crate) fn chat(
    py: Python<'_>,
    client: &PyQuillClient,
    requests: &Bound<'_, PyAny>,
    timeout_ms: Option<u64>,
    headers: Option<Vec<(String, String)>>,
    eager: bool,
) -> PyResult<Py<PyGenerateStream>> {
    let _inside = exit::enter(py);
    let requests = pump_encoded(py, requests, encode_chat_item)?;
    let call = call_options(chat_call(requests), timeout_ms, headers);
    PyGenerateStream::open(py, client, call, true, eager)
}

/// The `Embed` call of the keyword arguments of `QuillClient.embed`, and the request
/// its answer is checked against.
pub(crate) fn embed_request(
    input_ids: Vec<u32>,
    layers: Option<Vec<i32>>,
    pool: bool,
    pool_strategy: Option<String>,
    timeout_ms: Option<u64>,
    headers: Option<Vec<(String, String)>>,
) -> (Call, EmbedRequest) {
    let request = EmbedRequest {
        input_ids,
        layers: layers.unwrap_or_default(),
        pool,
        pool_strategy,
    };
    let call = call_options(embed_call(&request), timeout_ms, headers);
    (call, request)
}

/// The tensors of the `Embed` reply to `request` as a list of `quill.Tensor`.
pub(crate) fn embed_reply<'py>(
    py: Python<'py>,
    reply: Reply,
    request: &EmbedRequest,
) -> PyResult<Bound<'py, PyAny>> {
    let tensors = embeddings_from_reply(request, reply.body).py()?;
    let list = PyList::empty(py);
    for t in tensors {
        list.append(Py::new(py, PyTensor::wrap(t))?)?;
    }
    Ok(list.into_any())
}
