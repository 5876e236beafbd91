//! `quill.QuillClient`: the Python face of [`crate::QuillClient`].
//!
//! Every network wait runs with the GIL released: [`wait::blocking`] for unary and
//! tensor calls, which the calling thread drives itself, [`wait::block_on`] for
//! streams. One client is shared safely by many threads (the core client is
//! `Send + Sync`). JSON bodies are serialised with Python's own `json` module.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};

use super::args;
use super::errors::{to_py_err, IntoPyResult};
use super::inference::{self, PyGenerateRequest, PyGenerateStream};
use super::stream::{pump_requests, PyStream, StreamKind};
use super::tensor::{bytes_like, PyTensor};
use super::{exit, logging, text, wait};
use crate::client::{
    Answer, Body, Call, ClientConfig, HeaderSetting, Http2Settings, HttpVersion, QuillClient,
    Reply, ReplyMemory, ReplyMemoryProvider,
};
use crate::error::QuillError;
use crate::protocol::DEFAULT_MAX_DECODED_SIZE;
use crate::tensor::Tensor;

// The signature below spells the default out so Python introspection shows it.
const _: () = assert!(DEFAULT_MAX_DECODED_SIZE == 67108864);

static JSON_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Request bytes: a bytes-like object is sent as is. A large `bytes` object is sent
/// from its own memory (it is immutable, and the body keeps a reference to it); other
/// buffers are copied once, since their owner may change them during the call.
pub(crate) fn request_bytes(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        if b.as_bytes().len() >= super::DETACH_THRESHOLD {
            return Ok(Bytes::from_owner(PyBackedBytes::from(b.clone())));
        }
    }
    bytes_like(py, obj, |raw| Ok(Bytes::copy_from_slice(raw)))
}

/// A JSON request, by the rule of `quill/_json.py`: a `str` or bytes-like value is
/// JSON text and passes through; anything else goes through `quill._json.dumps`.
pub(crate) fn json_bytes(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let _inside = exit::enter(py);
    if let Ok(s) = obj.cast::<PyString>() {
        // Sent as JSON text in UTF-8.
        let text = text::utf8(s, "a str request")?;
        return Ok(Bytes::copy_from_slice(text.as_bytes()));
    }
    if is_bytes_like(obj) {
        return request_bytes(py, obj);
    }
    let text: String = JSON_DUMPS
        .import(py, "quill._json", "dumps")?
        .call1((obj,))?
        .extract()?;
    Ok(Bytes::from(text.into_bytes()))
}

/// The value of a JSON reply, by the rule of `quill/_json.py`.
fn json_value<'py>(py: Python<'py>, reply: Reply, path: String) -> PyResult<Bound<'py, PyAny>> {
    let _inside = exit::enter(py);
    JSON_LOADS.import(py, "quill._json", "loads")?.call1((
        PyBytes::new(py, &reply.body),
        reply.status,
        path,
    ))
}

/// Client for Quill services: `QuillClient(base_url, timeout_ms=30000, enable_compression=False)`.
#[pyclass(name = "QuillClient", module = "quill", frozen)]
pub struct PyQuillClient {
    pub(crate) inner: Arc<QuillClient>,
}

impl PyQuillClient {
    /// A client of `config` with `headers` set (secret ones kept secret).
    fn build(py: Python<'_>, config: ClientConfig, headers: Vec<HeaderSetting>) -> PyResult<Self> {
        let inner = exit::detach(py, || QuillClient::with_config(config)).py()?;
        // Configuring logging and then making a client is the usual order: the client's
        // first calls already see the levels asked for.
        logging::refresh_level(py)?;
        for h in headers {
            let set = if h.secret {
                inner.set_secret_header(&h.name, &h.value)
            } else {
                inner.set_header(&h.name, &h.value)
            };
            set.py()?;
        }
        Ok(PyQuillClient {
            inner: Arc::new(inner),
        })
    }

    fn handle(&self) -> PyResult<tokio::runtime::Handle> {
        self.inner.try_runtime_handle().py()
    }

    /// A call of `request` (bytes-like as is, anything else as JSON) with its options:
    /// what streams and tensor calls send.
    fn stream_call(
        &self,
        py: Python<'_>,
        service: &str,
        method: &str,
        request: Option<&Bound<'_, PyAny>>,
        timeout_ms: Option<u64>,
        headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Call> {
        let _inside = exit::enter(py);
        let call = Call::new(service, method, request_body(py, request)?);
        Ok(call_options(call, timeout_ms, headers))
    }

    /// Runs `call` on this thread with the GIL released (signals checked meanwhile).
    pub(crate) fn run_blocking<A: Answer>(&self, py: Python<'_>, call: Call) -> PyResult<A> {
        logging::tick(py)?;
        wait::blocking(py, |tick| {
            self.inner.run_blocking_with(call, Some(tick), None)
        })
    }

    /// `run_blocking` for a reply returned as `bytes`: a large reply of known length is
    /// read straight into the `bytes` object (see `ReplyInBytes`).
    fn run_for_bytes<'py>(&self, py: Python<'py>, call: Call) -> PyResult<Bound<'py, PyBytes>> {
        logging::tick(py)?;
        let target = Arc::new(ReplyInBytes::default());
        let provider = target.clone().provider();
        let reply: Reply = wait::blocking(py, |tick| {
            self.inner
                .run_blocking_with(call, Some(tick), Some(provider))
        })?;
        Ok(match target.take(&reply) {
            Some(bytes) => {
                drop(reply);
                bytes.into_bound(py)
            }
            None => PyBytes::new(py, &reply.body),
        })
    }

    /// Runs `call` on the client's runtime and returns an asyncio future of its answer,
    /// converted by `convert` with the GIL held.
    pub(crate) fn run_async<'py, A: Answer>(
        &self,
        py: Python<'py>,
        call: Call,
        convert: impl for<'a> FnOnce(Python<'a>, A) -> PyResult<Bound<'a, PyAny>> + Send + 'static,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.inner.clone();
        wait::to_asyncio(
            py,
            &self.handle()?,
            async move { client.run(call).await },
            convert,
        )
    }
}

/// Replies of at least this size are read straight into the `bytes` object returned:
/// below it, taking the GIL mid-call to make the object costs more than the copy saved.
const DIRECT_REPLY: usize = super::DETACH_THRESHOLD;

/// The `bytes` object a reply is being read into. `bytes` are immutable once shared,
/// but `PyBytes_FromStringAndSize(NULL, n)` makes one to be filled first, and this one
/// is not shared until the call hands it back. Only a caller driving its own call (on
/// a lane) takes the GIL for it; on a client worker it would stall the other calls.
#[derive(Default)]
struct ReplyInBytes {
    /// The object of the latest attempt and the address of its bytes.
    made: Mutex<Option<(usize, Py<PyBytes>)>>,
}

impl ReplyInBytes {
    fn provider(self: Arc<Self>) -> ReplyMemoryProvider {
        let caller = std::thread::current().id();
        Arc::new(move |len| {
            if len < DIRECT_REPLY || std::thread::current().id() != caller {
                return None;
            }
            let size = isize::try_from(len).ok()?;
            exit::attach(|py| {
                // SAFETY: a NULL source makes an uninitialised object of `size` bytes.
                let raw = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
                if raw.is_null() {
                    // MemoryError: gather the reply in Rust memory instead.
                    drop(PyErr::take(py));
                    return None;
                }
                // SAFETY: `raw` is a new reference to a bytes object.
                let obj: Py<PyBytes> = unsafe {
                    Bound::from_owned_ptr(py, raw)
                        .cast_into_unchecked::<PyBytes>()
                        .unbind()
                };
                // SAFETY: the object's buffer of `len` bytes, which lives as long as it.
                let data = unsafe { pyo3::ffi::PyBytes_AsString(raw) }.cast::<u8>();
                let kept = obj.clone_ref(py);
                *self.made.lock().unwrap_or_else(|p| p.into_inner()) = Some((data as usize, kept));
                // SAFETY: nobody else sees the object until `take` hands it back, and
                // the Memory owns a reference to it.
                Some(unsafe { ReplyMemory::new(data, len, Box::new(obj)) })
            })
        })
    }

    /// The object holding `reply`'s body, when the body was read into it.
    fn take(&self, reply: &Reply) -> Option<Py<PyBytes>> {
        let (data, obj) = self.made.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        (reply.body.as_ptr() as usize == data).then_some(obj)
    }
}

/// `call` with the per-call options of the Python signature (`timeout_ms=None` keeps
/// the client's timeout).
pub(crate) fn call_options(
    mut call: Call,
    timeout_ms: Option<u64>,
    headers: Option<Vec<(String, String)>>,
) -> Call {
    if let Some(ms) = timeout_ms {
        call = call.timeout_ms(ms);
    }
    for (name, value) in headers.into_iter().flatten() {
        call = call.header(name, value);
    }
    call
}

/// The body of a raw call: bytes-like, or empty.
fn raw_body(py: Python<'_>, request: Option<&Bound<'_, PyAny>>) -> PyResult<Body> {
    let bytes = request.map(|r| request_bytes(py, r)).transpose()?;
    Ok(Body::Proto(bytes.unwrap_or_default()))
}

/// The body of a JSON call: the request as JSON, or `{}`.
fn json_body(py: Python<'_>, request: Option<&Bound<'_, PyAny>>) -> PyResult<Body> {
    Ok(Body::Json(match request {
        Some(r) => json_bytes(py, r)?,
        None => Bytes::from_static(b"{}"),
    }))
}

/// The body of a stream or tensor call: bytes-like as they are, anything else as JSON,
/// nothing as an empty message.
pub(crate) fn request_body(py: Python<'_>, request: Option<&Bound<'_, PyAny>>) -> PyResult<Body> {
    match request {
        None => Ok(Body::Proto(Bytes::new())),
        Some(r) if is_bytes_like(r) => Ok(Body::Proto(request_bytes(py, r)?)),
        Some(r) => Ok(Body::Json(json_bytes(py, r)?)),
    }
}

/// `http_version=`, checked, as the version's own name: a `&'static str`, so the
/// signature keeps its literal default `"auto"` (shown by introspection).
fn http_version_name(obj: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    let name = text::http_version(obj)?;
    HttpVersion::from_name(&name)
        .map(HttpVersion::name)
        .map_err(to_py_err)
}

fn is_bytes_like(obj: &Bound<'_, PyAny>) -> bool {
    obj.cast::<PyBytes>().is_ok()
        || obj.cast::<PyByteArray>().is_ok()
        || obj.cast::<PyMemoryView>().is_ok()
}

#[pymethods]
impl PyQuillClient {
    #[new]
    #[pyo3(signature = (
        base_url,
        timeout_ms = 30000,
        enable_compression = false,
        *,
        max_decoded_size = 67108864,
        idle_timeout_ms = None,
        max_retries = 0,
        ca_cert = None,
        tls_server_name = None,
        user_agent = None,
        max_connections = 100,
        http_version = "auto",
        http2_keep_alive_interval_ms = 30000,
        http2_keep_alive_timeout_ms = 20000,
        http2_stream_window = None,
        http2_connection_window = None,
        http2_adaptive_window = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        #[pyo3(from_py_with = text::base_url)] base_url: String,
        #[pyo3(from_py_with = args::timeout_ms)] timeout_ms: u64,
        enable_compression: bool,
        #[pyo3(from_py_with = args::max_decoded_size)] max_decoded_size: u64,
        #[pyo3(from_py_with = args::idle_timeout_ms)] idle_timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::max_retries)] max_retries: u32,
        ca_cert: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = text::opt_tls_server_name)] tls_server_name: Option<String>,
        #[pyo3(from_py_with = text::opt_user_agent)] user_agent: Option<String>,
        #[pyo3(from_py_with = args::max_connections)] max_connections: u32,
        #[pyo3(from_py_with = http_version_name)] http_version: &'static str,
        #[pyo3(from_py_with = args::http2_keep_alive_interval_ms)]
        http2_keep_alive_interval_ms: Option<u64>,
        #[pyo3(from_py_with = args::http2_keep_alive_timeout_ms)] http2_keep_alive_timeout_ms: u64,
        #[pyo3(from_py_with = args::http2_stream_window)] http2_stream_window: Option<u32>,
        #[pyo3(from_py_with = args::http2_connection_window)] http2_connection_window: Option<u32>,
        http2_adaptive_window: bool,
    ) -> PyResult<Self> {
        let _inside = exit::enter(py);
        let mut config = ClientConfig::new(base_url);
        config.max_connections = max_connections;
        config.http_version = HttpVersion::from_name(http_version).map_err(to_py_err)?;
        config.http2 = Http2Settings {
            keep_alive_interval_ms: http2_keep_alive_interval_ms,
            keep_alive_timeout_ms: http2_keep_alive_timeout_ms,
            initial_stream_window: http2_stream_window,
            initial_connection_window: http2_connection_window,
            adaptive_window: http2_adaptive_window,
        };
        config.timeout_ms = timeout_ms;
        config.enable_compression = enable_compression;
        config.max_decoded_size = max_decoded_size;
        config.idle_timeout_ms = idle_timeout_ms;
        config.max_retries = max_retries;
        config.ca_cert_pem = ca_cert
            .map(|c| request_bytes(py, c).map(|b| b.to_vec()))
            .transpose()?;
        config.tls_server_name = tls_server_name;
        config.user_agent = user_agent;
        PyQuillClient::build(py, config, Vec::new())
    }

    /// The client's settings as a plain dict: `base_url`, `timeout_ms`,
    /// `enable_compression`, `max_decoded_size`, `idle_timeout_ms`, `max_retries`,
    /// `ca_cert`, `tls_server_name`, `user_agent` and `headers` (a list of `{"name", "value", "secret"}`).
    /// Secret headers (bearer token, API keys, anything set as secret) are left out
    /// unless `include_secrets=True`; `QuillClient.from_config` rebuilds a client.
    #[pyo3(signature = (*, include_secrets = false))]
    fn to_config<'py>(
        &self,
        py: Python<'py>,
        include_secrets: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.config();
        let d = PyDict::new(py);
        d.set_item("base_url", c.base_url)?;
        d.set_item("timeout_ms", c.timeout_ms)?;
        d.set_item("enable_compression", c.enable_compression)?;
        d.set_item("max_decoded_size", c.max_decoded_size)?;
        d.set_item("idle_timeout_ms", c.idle_timeout_ms)?;
        d.set_item("max_retries", c.max_retries)?;
        d.set_item("ca_cert", c.ca_cert_pem.map(|pem| PyBytes::new(py, &pem)))?;
        d.set_item("tls_server_name", c.tls_server_name)?;
        d.set_item("user_agent", c.user_agent)?;
        d.set_item("max_connections", c.max_connections)?;
        d.set_item("http_version", c.http_version.name())?;
        d.set_item(
            "http2_keep_alive_interval_ms",
            c.http2.keep_alive_interval_ms,
        )?;
        d.set_item("http2_keep_alive_timeout_ms", c.http2.keep_alive_timeout_ms)?;
        d.set_item("http2_stream_window", c.http2.initial_stream_window)?;
        d.set_item("http2_connection_window", c.http2.initial_connection_window)?;
        d.set_item("http2_adaptive_window", c.http2.adaptive_window)?;
        let headers = PyList::empty(py);
        for h in self.inner.header_settings(include_secrets) {
            let entry = PyDict::new(py);
            entry.set_item("name", h.name)?;
            entry.set_item("value", h.value)?;
            entry.set_item("secret", h.secret)?;
            headers.append(entry)?;
        }
        d.set_item("headers", headers)?;
        Ok(d)
    }

    /// A client with the settings of `config` (a dict from `to_config`): a fresh
    /// runtime and connection pool. Unknown keys are an error.
    #[staticmethod]
    fn from_config(py: Python<'_>, config: &Bound<'_, PyDict>) -> PyResult<Self> {
        let _inside = exit::enter(py);
        let known = [
            "base_url",
            "timeout_ms",
            "enable_compression",
            "max_decoded_size",
            "idle_timeout_ms",
            "max_retries",
            "ca_cert",
            "tls_server_name",
            "user_agent",
            "max_connections",
            "http_version",
            "http2_keep_alive_interval_ms",
            "http2_keep_alive_timeout_ms",
            "http2_stream_window",
            "http2_connection_window",
            "http2_adaptive_window",
            "headers",
        ];
        for key in config.keys() {
            let key = text::string(&key, "a client setting's name")?;
            if !known.contains(&key.as_str()) {
                return Err(to_py_err(QuillError::invalid(format!(
                    "unknown client setting {key:?}"
                ))));
            }
        }
        let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
            Ok(config.get_item(k)?.filter(|v| !v.is_none()))
        };
        let base_url =
            text::base_url(&get("base_url")?.ok_or_else(|| {
                to_py_err(QuillError::invalid("client config needs a base_url"))
            })?)?;
        let mut c = ClientConfig::new(base_url);
        if let Some(v) = get("timeout_ms")? {
            c.timeout_ms = args::timeout_ms(&v)?;
        }
        if let Some(v) = get("enable_compression")? {
            c.enable_compression = v.extract()?;
        }
        if let Some(v) = get("max_decoded_size")? {
            c.max_decoded_size = args::max_decoded_size(&v)?;
        }
        c.idle_timeout_ms = get("idle_timeout_ms")?
            .map(|v| args::idle_timeout_ms(&v))
            .transpose()?
            .flatten();
        if let Some(v) = get("max_retries")? {
            c.max_retries = args::max_retries(&v)?;
        }
        c.ca_cert_pem = get("ca_cert")?
            .map(|v| request_bytes(py, &v).map(|b| b.to_vec()))
            .transpose()?;
        c.tls_server_name = get("tls_server_name")?
            .map(|v| text::string(&v, "tls_server_name"))
            .transpose()?;
        c.user_agent = get("user_agent")?
            .map(|v| text::string(&v, "user_agent"))
            .transpose()?;
        if let Some(v) = get("max_connections")? {
            c.max_connections = args::max_connections(&v)?;
        }
        if let Some(v) = get("http_version")? {
            c.http_version = HttpVersion::from_name(&text::http_version(&v)?).map_err(to_py_err)?;
        }
        // A missing key keeps the default; an explicit None means "none" (no pings,
        // adaptive windows), as it does in the constructor.
        if let Some(v) = config.get_item("http2_keep_alive_interval_ms")? {
            c.http2.keep_alive_interval_ms = args::http2_keep_alive_interval_ms(&v)?;
        }
        if let Some(v) = get("http2_keep_alive_timeout_ms")? {
            c.http2.keep_alive_timeout_ms = args::http2_keep_alive_timeout_ms(&v)?;
        }
        c.http2.initial_stream_window = get("http2_stream_window")?
            .map(|v| args::http2_stream_window(&v))
            .transpose()?
            .flatten();
        c.http2.initial_connection_window = get("http2_connection_window")?
            .map(|v| args::http2_connection_window(&v))
            .transpose()?
            .flatten();
        if let Some(v) = get("http2_adaptive_window")? {
            c.http2.adaptive_window = v.extract()?;
        }
        let mut headers = Vec::new();
        for entry in get("headers")?
            .map(|h| h.try_iter())
            .transpose()?
            .into_iter()
            .flatten()
        {
            let entry = entry?;
            let field = |k: &str| -> PyResult<Bound<'_, PyAny>> {
                entry.get_item(k).map_err(|_| {
                    to_py_err(QuillError::invalid(format!("a header entry needs {k:?}")))
                })
            };
            let name = text::string(&field("name")?, "a header's name")?;
            // Never shown: the value may be a secret.
            let value = text::string(&field("value")?, &format!("the value of header {name}"))?;
            headers.push(HeaderSetting {
                name,
                value,
                secret: entry
                    .get_item("secret")
                    .map_or(Ok(false), |s| s.extract())?,
            });
        }
        PyQuillClient::build(py, c, headers)
    }

    /// Pickles as its configuration, without secret headers: a bearer token or an API
    /// key never reaches a pickle by accident. The unpickled client has its own runtime
    /// and pool; give it credentials there (`set_bearer_token`), or pass
    /// `to_config(include_secrets=True)` explicitly and rebuild with `from_config`.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let rebuild = py.get_type::<PyQuillClient>().getattr("from_config")?;
        (rebuild, (self.to_config(py, false)?,)).into_pyobject(py)
    }

    /// A new client with the same settings, secrets included (nothing leaves memory),
    /// and its own runtime and pool.
    fn __copy__(&self, py: Python<'_>) -> PyResult<Self> {
        PyQuillClient::from_config(py, &self.to_config(py, true)?)
    }

    fn __deepcopy__(&self, py: Python<'_>, _memo: &Bound<'_, PyAny>) -> PyResult<Self> {
        self.__copy__(py)
    }

    /// A unary call: raw request bytes in, raw response bytes out. `timeout_ms` and
    /// `headers` apply to this call only (every call and stream method takes them).
    #[pyo3(signature = (service, method, request = None, *, idempotent = false, timeout_ms = None, headers = None))]
    #[allow(clippy::too_many_arguments)]
    fn call<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'py, PyAny>>,
        idempotent: bool,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let _inside = exit::enter(py);
        let call = Call::new(service, method, raw_body(py, request)?).idempotent(idempotent);
        self.run_for_bytes(py, call_options(call, timeout_ms, headers))
    }

    /// A JSON call: `request` (dict, list, str, …) is sent as JSON, the JSON answer
    /// returned as Python objects.
    #[pyo3(signature = (service, method, request = None, *, idempotent = false, timeout_ms = None, headers = None))]
    #[allow(clippy::too_many_arguments)]
    fn call_json<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'py, PyAny>>,
        idempotent: bool,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _inside = exit::enter(py);
        let call = Call::new(service, method, json_body(py, request)?).idempotent(idempotent);
        let path = call.path();
        let reply: Reply = self.run_blocking(py, call_options(call, timeout_ms, headers))?;
        json_value(py, reply, path)
    }

    /// `await client.call_async(...)`: `call` for asyncio.
    #[pyo3(signature = (service, method, request = None, *, idempotent = false, timeout_ms = None, headers = None))]
    #[allow(clippy::too_many_arguments)]
    fn call_async<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'py, PyAny>>,
        idempotent: bool,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _inside = exit::enter(py);
        let call = Call::new(service, method, raw_body(py, request)?).idempotent(idempotent);
        self.run_async(
            py,
            call_options(call, timeout_ms, headers),
            |py, reply: Reply| Ok(PyBytes::new(py, &reply.body).into_any()),
        )
    }

    /// `await client.call_json_async(...)`: `call_json` for asyncio.
    #[pyo3(signature = (service, method, request = None, *, idempotent = false, timeout_ms = None, headers = None))]
    #[allow(clippy::too_many_arguments)]
    fn call_json_async<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'py, PyAny>>,
        idempotent: bool,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _inside = exit::enter(py);
        let call = Call::new(service, method, json_body(py, request)?).idempotent(idempotent);
        let path = call.path();
        self.run_async(
            py,
            call_options(call, timeout_ms, headers),
            move |py, reply: Reply| json_value(py, reply, path),
        )
    }

    /// Server streaming: an iterator (and async iterator) over the raw response
    /// messages. A dict/list/str request is sent as JSON, bytes as they are. Opens the
    /// call now, so a status error is raised here, as for a unary call.
    #[pyo3(signature = (service, method, request = None, *, timeout_ms = None, headers = None))]
    fn stream(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<PyStream> {
        let call = self.stream_call(py, &service, &method, request, timeout_ms, headers)?;
        PyStream::open(py, self, call, StreamKind::Messages, true)
    }

    /// Server streaming of `TokenBatch` messages (protocol §8).
    #[pyo3(signature = (service, method, request = None, *, timeout_ms = None, headers = None))]
    fn stream_tokens(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<PyStream> {
        let call = self.stream_call(py, &service, &method, request, timeout_ms, headers)?;
        PyStream::open(py, self, call, StreamKind::Tokens, true)
    }

    /// `async for m in client.stream_async(...)`: opens on the first iteration.
    #[pyo3(signature = (service, method, request = None, *, timeout_ms = None, headers = None))]
    fn stream_async(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<PyStream> {
        let call = self.stream_call(py, &service, &method, request, timeout_ms, headers)?;
        PyStream::open(py, self, call, StreamKind::Messages, false)
    }

    /// `async for batch in client.stream_tokens_async(...)`.
    #[pyo3(signature = (service, method, request = None, *, timeout_ms = None, headers = None))]
    fn stream_tokens_async(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<PyStream> {
        let call = self.stream_call(py, &service, &method, request, timeout_ms, headers)?;
        PyStream::open(py, self, call, StreamKind::Tokens, false)
    }

    /// Bidirectional streaming: each item of `requests` (an iterable of bytes) goes
    /// out as a frame as soon as it is produced; replies can arrive before the request
    /// stream ends (full duplex).
    #[pyo3(signature = (service, method, requests, *, timeout_ms = None, headers = None))]
    fn bidi_stream(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        requests: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<PyStream> {
        let _inside = exit::enter(py);
        let call = Call::messages(service, method, pump_requests(py, requests)?);
        PyStream::open(
            py,
            self,
            call_options(call, timeout_ms, headers),
            StreamKind::Messages,
            true,
        )
    }

    /// Client streaming: sends every item of `requests` as a frame, returns the reply.
    #[pyo3(signature = (service, method, requests, *, timeout_ms = None, headers = None))]
    fn client_stream<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        requests: &Bound<'py, PyAny>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let _inside = exit::enter(py);
        let call = Call::messages(service, method, pump_requests(py, requests)?);
        self.run_for_bytes(py, call_options(call, timeout_ms, headers))
    }

    /// Sends `tensor` as the request body in tensor frames (its bytes are not copied);
    /// returns the raw response.
    #[pyo3(signature = (service, method, tensor, *, timeout_ms = None, headers = None))]
    fn send_tensor<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        tensor: &Bound<'py, PyTensor>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let _inside = exit::enter(py);
        let call = Call::tensor(service, method, tensor.get().inner.clone());
        self.run_for_bytes(py, call_options(call, timeout_ms, headers))
    }

    /// A call whose response is one tensor in tensor frames. A dict/list/str request
    /// is sent as JSON, bytes as they are.
    #[pyo3(signature = (service, method, request = None, *, timeout_ms = None, headers = None))]
    fn call_tensor(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = text::service)] service: String,
        #[pyo3(from_py_with = text::method)] method: String,
        request: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<PyTensor> {
        let call = self.stream_call(py, &service, &method, request, timeout_ms, headers)?;
        let tensor: Tensor = self.run_blocking(py, call)?;
        Ok(PyTensor::wrap(tensor))
    }

    /// `quill.inference.v1.InferenceService/Generate`: a `GenerateStream` of
    /// `GenerateResponse`s for the prompt's token ids. Opens the call now (a status
    /// error is raised here); breaking out of the loop cancels the generation.
    #[pyo3(signature = (input_ids, *, max_new_tokens=None, temperature=None, top_p=None,
        top_k=None, stop_token_ids=None, repetition_penalty=None, stream_embeddings=false,
        timeout_ms=None, headers=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = args::input_ids)] input_ids: Vec<u32>,
        #[pyo3(from_py_with = args::max_new_tokens)] max_new_tokens: Option<u32>,
        temperature: Option<f32>,
        top_p: Option<f32>,
        #[pyo3(from_py_with = args::top_k)] top_k: Option<u32>,
        #[pyo3(from_py_with = args::stop_token_ids)] stop_token_ids: Option<Vec<u32>>,
        repetition_penalty: Option<f32>,
        stream_embeddings: bool,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Py<PyGenerateStream>> {
        let request = PyGenerateRequest::new(
            input_ids,
            max_new_tokens,
            temperature,
            top_p,
            top_k,
            stop_token_ids,
            repetition_penalty,
            stream_embeddings,
        );
        inference::generate(py, self, &request, timeout_ms, headers, true)
    }

    /// `async for r in client.generate_async(...)`: `generate`, opened on the first
    /// iteration.
    #[pyo3(signature = (input_ids, *, max_new_tokens=None, temperature=None, top_p=None,
        top_k=None, stop_token_ids=None, repetition_penalty=None, stream_embeddings=false,
        timeout_ms=None, headers=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate_async(
        &self,
        py: Python<'_>,
        #[pyo3(from_py_with = args::input_ids)] input_ids: Vec<u32>,
        #[pyo3(from_py_with = args::max_new_tokens)] max_new_tokens: Option<u32>,
        temperature: Option<f32>,
        top_p: Option<f32>,
        #[pyo3(from_py_with = args::top_k)] top_k: Option<u32>,
        #[pyo3(from_py_with = args::stop_token_ids)] stop_token_ids: Option<Vec<u32>>,
        repetition_penalty: Option<f32>,
        stream_embeddings: bool,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Py<PyGenerateStream>> {
        let request = PyGenerateRequest::new(
            input_ids,
            max_new_tokens,
            temperature,
            top_p,
            top_k,
            stop_token_ids,
            repetition_penalty,
            stream_embeddings,
        );
        inference::generate(py, self, &request, timeout_ms, headers, false)
    }

    /// `quill.inference.v1.InferenceService/Chat`: each item of `requests` (a
    /// `GenerateRequest`, or a dict of its arguments) starts a generation as soon as it
    /// is produced; the `GenerateStream` yields their responses as they come.
    #[pyo3(signature = (requests, *, timeout_ms=None, headers=None))]
    fn chat(
        &self,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Py<PyGenerateStream>> {
        inference::chat(py, self, requests, timeout_ms, headers, true)
    }

    /// `async for r in client.chat_async(requests)`: `chat`, opened on the first
    /// iteration.
    #[pyo3(signature = (requests, *, timeout_ms=None, headers=None))]
    fn chat_async(
        &self,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Py<PyGenerateStream>> {
        inference::chat(py, self, requests, timeout_ms, headers, false)
    }

    /// `quill.inference.v1.InferenceService/Embed`: one float `Tensor` per layer asked
    /// for (`numpy.asarray(t)` is a zero-copy view); an answer with another count is a
    /// `ProtocolError`. Idempotent: retried when the client has `max_retries`.
    #[pyo3(signature = (input_ids, *, layers=None, pool=false, pool_strategy=None,
        timeout_ms=None, headers=None))]
    #[allow(clippy::too_many_arguments)]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = args::input_ids)] input_ids: Vec<u32>,
        #[pyo3(from_py_with = args::layers)] layers: Option<Vec<i32>>,
        pool: bool,
        #[pyo3(from_py_with = text::opt_pool_strategy)] pool_strategy: Option<String>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _inside = exit::enter(py);
        let (call, request) =
            inference::embed_request(input_ids, layers, pool, pool_strategy, timeout_ms, headers);
        let reply: Reply = self.run_blocking(py, call)?;
        inference::embed_reply(py, reply, &request)
    }

    /// `await client.embed_async(...)`: `embed` for asyncio.
    #[pyo3(signature = (input_ids, *, layers=None, pool=false, pool_strategy=None,
        timeout_ms=None, headers=None))]
    #[allow(clippy::too_many_arguments)]
    fn embed_async<'py>(
        &self,
        py: Python<'py>,
        #[pyo3(from_py_with = args::input_ids)] input_ids: Vec<u32>,
        #[pyo3(from_py_with = args::layers)] layers: Option<Vec<i32>>,
        pool: bool,
        #[pyo3(from_py_with = text::opt_pool_strategy)] pool_strategy: Option<String>,
        #[pyo3(from_py_with = args::call_timeout_ms)] timeout_ms: Option<u64>,
        #[pyo3(from_py_with = args::call_headers)] headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _inside = exit::enter(py);
        let (call, request) =
            inference::embed_request(input_ids, layers, pool, pool_strategy, timeout_ms, headers);
        self.run_async(py, call, move |py, reply| {
            inference::embed_reply(py, reply, &request)
        })
    }

    /// Closes the client: calls and streams in flight on any thread end with
    /// `CallCancelledError`, the connections close, and later calls raise
    /// `CallCancelledError` ("the client is closed"). Idempotent; `with` and
    /// `async with` call it on exit.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.close();
        logging::tick(py)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.close(py)
    }

    fn __aenter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let py = slf.py();
        wait::ready(py, slf.into_any())
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _t: &Bound<'py, PyAny>,
        _v: &Bound<'py, PyAny>,
        _tb: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)?;
        wait::ready(py, py.None().into_bound(py))
    }

    /// `Authorization: Bearer <token>` on every call (never shown in repr or errors).
    fn set_bearer_token(&self, #[pyo3(from_py_with = text::token)] token: String) -> PyResult<()> {
        self.inner.set_bearer_token(&token).py()
    }

    /// An API key in `header_name` (default `X-API-Key`).
    #[pyo3(signature = (key, header_name = None))]
    fn set_api_key(
        &self,
        #[pyo3(from_py_with = text::key)] key: String,
        #[pyo3(from_py_with = text::opt_header_name)] header_name: Option<String>,
    ) -> PyResult<()> {
        self.inner.set_api_key(&key, header_name.as_deref()).py()
    }

    /// A custom header on every call; CR/LF and invalid characters are refused.
    fn set_header(
        &self,
        #[pyo3(from_py_with = text::name)] name: String,
        #[pyo3(from_py_with = text::value)] value: String,
    ) -> PyResult<()> {
        self.inner.set_header(&name, &value).py()
    }

    /// A custom header whose value is a secret whatever its name: never shown by
    /// `get_headers()`, `repr`, pickles, `to_config()` (without `include_secrets`),
    /// logs or errors.
    fn set_secret_header(
        &self,
        #[pyo3(from_py_with = text::name)] name: String,
        #[pyo3(from_py_with = text::value)] value: String,
    ) -> PyResult<()> {
        self.inner.set_secret_header(&name, &value).py()
    }

    /// Removes a header; returns whether it was set.
    fn remove_header(&self, #[pyo3(from_py_with = text::name)] name: String) -> bool {
        self.inner.remove_header(&name)
    }

    /// The configured headers; secret values (tokens, API keys) are shown as
    /// `<redacted>`.
    fn get_headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let _inside = exit::enter(py);
        let d = PyDict::new(py);
        for (k, v) in self.inner.headers() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    #[getter]
    fn base_url(&self) -> String {
        self.inner.base_url()
    }

    #[getter]
    fn timeout_ms(&self) -> u64 {
        self.inner.timeout_ms()
    }

    #[getter]
    fn compression_enabled(&self) -> bool {
        self.inner.compression_enabled()
    }

    /// `"auto"`, `"http1"`, `"http2"` or `"http3"`, as configured.
    #[getter]
    fn http_version(&self) -> &'static str {
        self.inner.http_version().name()
    }

    /// The transport profile the server last named in `Selected-Prism` (`"classic"`
    /// for HTTP/1.1, `"turbo"` for HTTP/2, `"hyper"` for HTTP/3), or `None` until a
    /// server names one.
    #[getter]
    fn selected_prism(&self) -> Option<String> {
        self.inner.selected_prism()
    }

    /// Moves the HTTP/3 connection to a new local UDP socket, as after a network
    /// change; open streams and later calls continue on the same QUIC connection.
    /// `False` when there is nothing to move (not HTTP/3, or no call made yet).
    fn rebind(&self) -> PyResult<bool> {
        self.inner.rebind().map_err(to_py_err)
    }

    fn __repr__(&self) -> String {
        format!(
            "QuillClient(base_url='{}', timeout_ms={}, enable_compression={})",
            self.inner.base_url(),
            self.inner.timeout_ms(),
            if self.inner.compression_enabled() {
                "True"
            } else {
                "False"
            }
        )
    }
}
