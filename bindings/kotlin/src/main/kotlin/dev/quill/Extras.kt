// Hand-written Kotlin extras over the generated bindings in quill.kt (which
// scripts/bindings regenerates; do not edit that one). Everything here is a thin layer:
// the facts (dtype table, codecs, validation) stay in the Rust core.
//
// The generated objects (QuillClient, Tensor, MessageStream, TokenStream,
// GenerateStream, ChatCall) already implement AutoCloseable, so `use { }` works on them
// as it is.

package dev.quill

import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.launch

// ---------------------------------------------------------------------------------
// Streams as Flows
// ---------------------------------------------------------------------------------

/**
 * The messages of this stream as a cold, single-use [Flow].
 *
 * The flow owns the stream: it calls [MessageStream.next] until the end of the stream,
 * and when the collector stops early (`take(n)`, `first()`, an exception, coroutine
 * cancellation) it [cancels][MessageStream.cancel] the stream, which closes the
 * connection so the server sees the client go. In every case the native stream object is
 * released ([MessageStream.close]) when the flow completes, so collect it once.
 * Stream errors surface as [QuillException] from `collect`.
 */
fun MessageStream.asFlow(): Flow<ByteArray> = flow {
    val stream = this@asFlow
    drain(stream, { stream.next() }, { stream.cancel() }) { emit(it) }
}

/**
 * The token batches of this stream as a cold, single-use [Flow]; see
 * [MessageStream.asFlow] for cancellation and ownership.
 */
fun TokenStream.asFlow(): Flow<TokenBatch> = flow {
    val stream = this@asFlow
    drain(stream, { stream.next() }, { stream.cancel() }) { emit(it) }
}

// [ended] runs after the last item and before the close, while the stream can still
// tell how it went (its timing).
private suspend inline fun <T : Any> drain(
    stream: AutoCloseable,
    next: () -> T?,
    cancel: () -> Unit,
    ended: () -> Unit = {},
    emit: (T) -> Unit,
) {
    var finished = false
    try {
        while (true) {
            val item = next() ?: break
            emit(item)
        }
        finished = true
        ended()
    } finally {
        if (!finished) cancel()
        stream.close()
    }
}

// ---------------------------------------------------------------------------------
// Bidirectional and client streaming
// ---------------------------------------------------------------------------------

/**
 * Sends every message of [requests] on one coroutine, then END_STREAM; a failure or
 * cancellation of the flow breaks the request stream off instead ([send] and [finish]
 * are the call object's, [abort] its abort). Once the call is over, the pump stops.
 */
private suspend fun <T> pump(
    requests: Flow<T>,
    send: suspend (T) -> Unit,
    finish: suspend () -> Unit,
    abort: (String) -> Unit,
) {
    try {
        requests.collect { send(it) }
        finish()
    } catch (e: QuillException.Cancelled) {
        // The call is over (the server answered or failed): the answer side reports how
        // it ended, so the pump stops without an error of its own.
    } catch (e: CancellationException) {
        abort("the request flow was cancelled")
        throw e
    } catch (e: Throwable) {
        abort("the request flow failed: ${e.message ?: e::class.simpleName}")
        throw e
    }
}

/**
 * A bidirectional streaming call: every message of [requests] goes out as it is
 * produced, and the replies arrive as a cold [Flow] while the requests are still going
 * out (full duplex). Collect it once.
 *
 * Stopping the collection early (`take(n)`, `first()`, cancellation) cancels both the
 * request pump and the response stream, so the server sees the client go. A server
 * error ends the collection with [QuillException]; a failed request flow breaks the
 * request off (the server sees a truncated stream) and its exception surfaces here.
 *
 * ```
 * val replies = client.bidiStream("echo.v1.EchoService", "BidiEcho", flowOf(a, b)).toList()
 * ```
 */
fun QuillClient.bidiStream(service: String, method: String, requests: Flow<ByteArray>): Flow<ByteArray> =
    flow {
        // Replies are emitted from this coroutine (not through a channel), so every reply
        // that arrived before a server failure reaches the collector ahead of the error.
        // The call object is closed only after the pump has stopped (it may still abort).
        openBidi(service, method).use { call ->
            coroutineScope {
                val requestPump = launch { pump(requests, { call.send(it) }, { call.finish() }, { call.abort(it) }) }
                call.responses().asFlow().collect { emit(it) }
                // The server has ended the call: requests not yet sent have nowhere to go.
                requestPump.cancel()
            }
        }
    }

/**
 * A client-streaming call: sends every message of [requests], then returns the one
 * reply. Cancelling the caller cancels the call; a failed request flow breaks the
 * request off and its exception is thrown.
 *
 * ```
 * val reply = client.clientStream("echo.v1.EchoService", "ClientStream", flowOf(a, b))
 * ```
 */
suspend fun QuillClient.clientStream(service: String, method: String, requests: Flow<ByteArray>): ByteArray =
    openClientStream(service, method).use { call ->
        coroutineScope {
            launch { pump(requests, { call.send(it) }, { call.finish() }, { call.abort(it) }) }
            call.response()
        }
    }

// ---------------------------------------------------------------------------------
// The typed inference API (quill.inference.v1.InferenceService)
// ---------------------------------------------------------------------------------

/**
 * The responses of this stream as a cold, single-use [Flow]; see [MessageStream.asFlow]
 * for cancellation and ownership. Read [GenerateStream.timing] inside the collection if
 * you need it (the stream is closed once the flow completes), or use
 * [QuillClient.generateFlow] with `onTiming`.
 *
 * ```
 * client.generate(request).asFlow().collect { print(it.tokens.text()) }
 * ```
 */
fun GenerateStream.asFlow(): Flow<GenerateResponse> = flow {
    val stream = this@asFlow
    drain(stream, { stream.next() }, { stream.cancel() }) { emit(it) }
}

// The call starts when the flow is collected, so every collection is a new generation
// and the timing covers what the collector saw.
private fun <T : Any> QuillClient.generated(
    request: GenerateRequest,
    headers: List<HeaderEntry>,
    onTiming: ((StreamTiming) -> Unit)?,
    next: suspend (GenerateStream) -> T?,
): Flow<T> = flow {
    val stream = generate(request, headers)
    drain(stream, { next(stream) }, { stream.cancel() }, ended = { onTiming?.invoke(stream.timing()) }) { emit(it) }
}

/**
 * `Generate` as a cold [Flow] of its responses: each collection makes the call (with
 * [headers] on it), and stopping early (`take(n)`, `first()`, cancellation) cancels it,
 * so the server stops generating. [onTiming] gets the final [StreamTiming] when the
 * stream ended complete; it is not called when the collection stops early or fails.
 * A response's `embedding` (`streamEmbeddings`) is the collector's to close.
 *
 * ```
 * client.generateFlow(GenerateRequest(inputIds = ids, maxNewTokens = 64u), onTiming = { println(it) })
 *     .collect { print(it.tokens.text()) }
 * ```
 */
fun QuillClient.generateFlow(
    request: GenerateRequest,
    headers: List<HeaderEntry> = listOf(),
    onTiming: ((StreamTiming) -> Unit)? = null,
): Flow<GenerateResponse> = generated(request, headers, onTiming) { it.next() }

/**
 * [generateFlow] reduced to the token batches. The embeddings, if any, are dropped in
 * the core, so nothing needs closing.
 *
 * ```
 * client.generateBatches(request).collect { batch -> print(batch.text()) }
 * ```
 */
fun QuillClient.generateBatches(
    request: GenerateRequest,
    headers: List<HeaderEntry> = listOf(),
    onTiming: ((StreamTiming) -> Unit)? = null,
): Flow<TokenBatch> = generated(request, headers, onTiming) { it.nextBatch() }

/**
 * The whole text of a `Generate` call, joined in the core (one FFI call for the stream,
 * not one per batch). Cancelling the caller cancels the call.
 *
 * ```
 * val text = client.generateText(GenerateRequest(inputIds = ids, maxNewTokens = 32u, temperature = 0f))
 * ```
 */
suspend fun QuillClient.generateText(request: GenerateRequest, headers: List<HeaderEntry> = listOf()): String {
    val stream = generate(request, headers)
    var finished = false
    try {
        return stream.text().also { finished = true }
    } finally {
        if (!finished) stream.cancel()
        stream.close()
    }
}

/**
 * A `Chat` call: every request of [requests] starts a generation as it is produced,
 * and the responses of all of them arrive as a cold [Flow] (`tokens.sequenceId` is the
 * request's 1-based index) while requests are still going out. The call ends once
 * [requests] is complete and the last generation is. Cancellation and failures work as
 * in [bidiStream]. Collect it once.
 *
 * ```
 * client.chat(flowOf(GenerateRequest(inputIds = a), GenerateRequest(inputIds = b)))
 *     .collect { println("${it.tokens.sequenceId}: ${it.tokens.text()}") }
 * ```
 */
fun QuillClient.chat(requests: Flow<GenerateRequest>): Flow<GenerateResponse> = flow {
    // As in bidiStream: responses are emitted from this coroutine, and the call object
    // outlives the pump.
    openChat().use { call ->
        coroutineScope {
            val requestPump = launch { pump(requests, { call.send(it) }, { call.finish() }, { call.abort(it) }) }
            call.responses().asFlow().collect { emit(it) }
            requestPump.cancel()
        }
    }
}

// ---------------------------------------------------------------------------------
// Tensors from and to JVM arrays and buffers
// ---------------------------------------------------------------------------------

/** A direct, little-endian buffer of [size] bytes: the layout tensor data uses. */
fun directTensorBuffer(size: Int): ByteBuffer =
    ByteBuffer.allocateDirect(size).order(ByteOrder.LITTLE_ENDIAN)

private fun checkedShape(shape: LongArray): LongArray {
    for (d in shape) {
        if (d < 0) {
            throw QuillException.InvalidArgument("negative dimension $d in shape ${shape.contentToString()}")
        }
    }
    return shape
}

// Tensors from JVM memory take one copy, made by the core straight from the array
// (pinned) or direct buffer into the tensor's own buffer (FastFfi.kt, src/ffi/jvm.rs).

private fun fromArray(array: Any, elementSize: Int, shape: LongArray, dtype: DType, name: String?): Tensor =
    tensorOf(fast { FastFfi.tensorFromArray(array, elementSize, checkedShape(shape), dtype.wireValue, name) })

/**
 * A tensor over the remaining bytes of [data] (little-endian, row-major element bytes),
 * copied once into the tensor's own buffer by the core.
 *
 * A direct buffer is read in place (its position and limit are honoured); a heap buffer
 * is read from its backing array. Throws [QuillException.InvalidArgument] when the byte
 * count does not match shape × dtype.
 */
fun Tensor.Companion.fromByteBuffer(
    data: ByteBuffer,
    shape: LongArray,
    dtype: DType,
    name: String? = null,
): Tensor {
    if (!data.isDirect) {
        val bytes = ByteArray(data.remaining()).also { data.duplicate().get(it) }
        return fromByteArray(bytes, shape, dtype, name)
    }
    return tensorOf(
        fast {
            FastFfi.tensorFromDirect(data, data.position(), data.remaining(), checkedShape(shape), dtype.wireValue, name)
        },
    )
}

/** A tensor over a copy of [data] (little-endian, row-major element bytes). */
fun Tensor.Companion.fromByteArray(
    data: ByteArray,
    shape: LongArray,
    dtype: DType,
    name: String? = null,
): Tensor = fromArray(data, 1, shape, dtype, name)

/** A float32 tensor of [values]; the shape defaults to one dimension. */
fun Tensor.Companion.fromFloatArray(
    values: FloatArray,
    shape: LongArray = longArrayOf(values.size.toLong()),
    name: String? = null,
): Tensor = fromArray(values, 4, shape, DType.FLOAT32, name)

/** A float64 tensor of [values]; the shape defaults to one dimension. */
fun Tensor.Companion.fromDoubleArray(
    values: DoubleArray,
    shape: LongArray = longArrayOf(values.size.toLong()),
    name: String? = null,
): Tensor = fromArray(values, 8, shape, DType.FLOAT64, name)

/** An int32 tensor of [values]; the shape defaults to one dimension. */
fun Tensor.Companion.fromIntArray(
    values: IntArray,
    shape: LongArray = longArrayOf(values.size.toLong()),
    name: String? = null,
): Tensor = fromArray(values, 4, shape, DType.INT32, name)

/** An int64 tensor of [values]; the shape defaults to one dimension. */
fun Tensor.Companion.fromLongArray(
    values: LongArray,
    shape: LongArray = longArrayOf(values.size.toLong()),
    name: String? = null,
): Tensor = fromArray(values, 8, shape, DType.INT64, name)

/** Decode a tensor from tensor frames (protocol §6) held in a byte array. */
fun Tensor.Companion.decode(frames: ByteArray): Tensor =
    Tensor.decode(directTensorBuffer(frames.size).put(frames).flip())

/** Number of elements, through the JVM fast path (`numElements()` without its FFI cost). */
val Tensor.elementCount: Long get() = borrow { FastFfi.tensorNumElements(it) }

/** Size of the element bytes, through the JVM fast path. */
val Tensor.byteCount: Long get() = borrow { FastFfi.tensorSizeBytes(it) }

/** The dtype, through the JVM fast path. */
val Tensor.elementType: DType get() = DType.fromWireValue(borrow { FastFfi.tensorDTypeWire(it) })

/** The shape as JVM longs, through the JVM fast path. */
fun Tensor.shapeLongs(): LongArray = borrow { FastFfi.tensorShape(it) }

private fun Tensor.checkType(expected: DType) {
    val actual = elementType
    if (actual != expected) {
        throw QuillException.UnsupportedDType("tensor is ${actual.canonicalName}, not ${expected.canonicalName}")
    }
}

private fun Tensor.elements(expected: DType): Int {
    checkType(expected)
    val n = elementCount
    if (n > Int.MAX_VALUE) {
        throw QuillException.InvalidArgument("tensor of $n elements does not fit a JVM array")
    }
    return n.toInt()
}

/** A copy of the elements of a float32 tensor (one copy, by the core). */
fun Tensor.toFloatArray(): FloatArray =
    FloatArray(elements(DType.FLOAT32)).also { out -> borrow { FastFfi.tensorCopyToArray(it, out, 4, 0) } }

/** A copy of the elements of a float64 tensor. */
fun Tensor.toDoubleArray(): DoubleArray =
    DoubleArray(elements(DType.FLOAT64)).also { out -> borrow { FastFfi.tensorCopyToArray(it, out, 8, 0) } }

/** A copy of the elements of an int32 tensor. */
fun Tensor.toIntArray(): IntArray =
    IntArray(elements(DType.INT32)).also { out -> borrow { FastFfi.tensorCopyToArray(it, out, 4, 0) } }

/** A copy of the elements of an int64 tensor. */
fun Tensor.toLongArray(): LongArray =
    LongArray(elements(DType.INT64)).also { out -> borrow { FastFfi.tensorCopyToArray(it, out, 8, 0) } }

/** A copy of the element bytes, whatever the dtype (one copy; `toBytes()` makes two). */
fun Tensor.toByteArray(): ByteArray {
    val n = byteCount
    if (n > Int.MAX_VALUE) throw QuillException.InvalidArgument("tensor of $n bytes does not fit a JVM array")
    return ByteArray(n.toInt()).also { out -> borrow { FastFfi.tensorCopyToArray(it, out, 1, 0) } }
}

/**
 * Copies the element bytes into [target] from [offset] and returns the offset after them:
 * one copy into an array the caller reuses, with no allocation (`toByteArray` pays the
 * JVM's zeroing of a fresh array on every call).
 *
 * ```
 * val frame = ByteArray(maxFrameBytes)
 * val end = tensor.copyInto(frame)
 * ```
 */
fun Tensor.copyInto(target: ByteArray, offset: Int = 0): Int {
    val n = byteCount
    borrow { FastFfi.tensorCopyToArray(it, target, 1, offset) }
    return offset + n.toInt()
}

/** Copies the element bytes into the direct buffer [target] at its position (which advances). */
fun Tensor.copyTo(target: ByteBuffer) {
    if (!target.isDirect) {
        target.put(toByteArray())
        return
    }
    borrow { FastFfi.tensorCopyToDirect(it, target, target.position()) }
    target.position(target.position() + byteCount.toInt())
}

/**
 * The element bytes without a copy: a read-only, little-endian direct buffer over the
 * tensor's own memory, which it keeps alive (even after [Tensor.close]) until the buffer,
 * and every buffer derived from it, is unreachable.
 */
fun Tensor.asReadOnlyBuffer(): ByteBuffer {
    val retained = borrow { FastFfi.tensorRetain(it) }
    val raw = try {
        fast { FastFfi.tensorView(retained) }
    } catch (e: Throwable) {
        FastFfi.tensorRelease(retained)
        throw e
    }
    // Views made from `raw` (asReadOnlyBuffer, slice, duplicate) reference it, so the
    // memory is released only when all of them are gone.
    UniffiLib.CLEANER.register(raw, ReleaseTensor(retained))
    return raw.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN)
}

private class ReleaseTensor(private val retained: Long) : Runnable {
    override fun run() = FastFfi.tensorRelease(retained)
}

// ---------------------------------------------------------------------------------
// Blocking calls
// ---------------------------------------------------------------------------------

/**
 * A unary `application/proto` call that blocks the calling thread, as OkHttp's
 * `execute()` does: the fastest way to make a small call (no JNA, no coroutine
 * hand-offs; docs/performance.md). Call it off the main thread, e.g. under
 * `withContext(Dispatchers.IO)`. It ends at the client's timeout; for a call that a
 * coroutine's cancellation must end, use the suspend [QuillClient.call].
 *
 * ```
 * val reply = withContext(Dispatchers.IO) { client.callBlocking("echo.v1.EchoService", "Echo", body) }
 * ```
 */
fun QuillClient.callBlocking(service: String, method: String, body: ByteArray, idempotent: Boolean = false): ByteArray =
    fast { clientBorrowing.with(this) { FastFfi.clientCall(it, service, method, body, idempotent) } }

// ---------------------------------------------------------------------------------
// Tokens and dtypes
// ---------------------------------------------------------------------------------

private fun ByteArray.toDirect(): ByteBuffer = ByteBuffer.allocateDirect(size).put(this).flip()

/** Decode one token (protocol §8) from [bytes]; leftover bytes are an error. */
fun Token.Companion.decode(bytes: ByteArray): Token = decodeToken(bytes.toDirect())

/** Decode one token batch (protocol §8) from [bytes]; leftover bytes are an error. */
fun TokenBatch.Companion.decode(bytes: ByteArray): TokenBatch = decodeTokenBatch(bytes.toDirect())

// The dtype table lives in the core (`DType.info()`); read each row once.
private val dtypeRows: Map<DType, DTypeInfo> by lazy { DType.entries.associateWith { it.info() } }

private val DType.row: DTypeInfo get() = dtypeRows.getValue(this)

/** Size of one element in bytes. */
val DType.elementSize: Int get() = row.elementSize.toInt()

/** Canonical lower-case name (`"float32"`, `"bool"`, …); `name` stays Kotlin's enum name. */
val DType.canonicalName: String get() = row.name

/** Number used on the wire (protocol §7). */
val DType.wireValue: Int get() = row.wireValue.toInt()

/** The dtype of a wire number; unknown numbers throw [QuillException.UnsupportedDType]. */
fun DType.Companion.fromWireValue(value: Int): DType {
    if (value !in 0..255) {
        throw QuillException.UnsupportedDType("unknown dtype number $value (expected 1..=9, see protocol §7)")
    }
    return dtypeFromWireValue(value.toUByte())
}

/** The dtype of a name such as `"float32"`. */
fun DType.Companion.fromName(name: String): DType = dtypeFromName(name)

// ---------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------

/** The java.util.logging level of an event level. */
val Level.julLevel: java.util.logging.Level
    get() = when (this) {
        Level.DEBUG -> java.util.logging.Level.FINE
        Level.INFO -> java.util.logging.Level.INFO
        Level.WARNING -> java.util.logging.Level.WARNING
    }

/** A [QuillLogger] that writes each event as a record of [jul]. */
class JavaUtilLogger(private val jul: java.util.logging.Logger) : QuillLogger {
    override fun log(event: LogEvent) {
        val level = event.level.julLevel
        if (!jul.isLoggable(level)) return
        val status = event.status?.let { " status=$it" } ?: ""
        jul.log(level, "${event.kind} ${event.target}$status in ${event.elapsedUs} µs: ${event.message}")
    }
}

/**
 * Installs [logger] for the client events of this process from [level] up, replacing any
 * earlier one (also one set with the generated `setLogger`); `null` removes it. Events
 * reach it through one JNI upcall each (about a microsecond; the generated `setLogger`
 * goes through JNA, about 50 µs an event: docs/performance.md), on the thread where they
 * happened, so keep it quick. An exception it throws is dropped.
 *
 * ```
 * installLogger(object : QuillLogger { override fun log(event: LogEvent) = println(event.message) })
 * ```
 */
fun installLogger(logger: QuillLogger?, level: Level = Level.INFO) {
    FastFfi.logger = logger
    fast { FastFfi.setLogger(logger != null, level.ordinal) }
}

/**
 * Routes the client events of this process (connections, finished and failed calls,
 * retries, timeouts, cancelled streams, size limits) to the java.util.logging logger
 * [jul] (default `dev.quill`), from [level] up; by default the most detailed level [jul]
 * takes, so events it would drop are never built. Events never carry header values or
 * bodies. `installLogger(null)` removes it.
 *
 * ```
 * installJavaUtilLogging()   // dev.quill at INFO: failed calls, retries, timeouts
 * ```
 */
fun installJavaUtilLogging(
    jul: java.util.logging.Logger = java.util.logging.Logger.getLogger("dev.quill"),
    level: Level = when {
        jul.isLoggable(java.util.logging.Level.FINE) -> Level.DEBUG
        jul.isLoggable(java.util.logging.Level.INFO) -> Level.INFO
        else -> Level.WARNING
    },
) = installLogger(JavaUtilLogger(jul), level)
