package dev.quill.bench

import dev.quill.DType
import dev.quill.Level
import dev.quill.LogEvent
import dev.quill.QuillClient
import dev.quill.QuillException
import dev.quill.QuillLogger
import dev.quill.QuillServer
import dev.quill.QuillServerExtension
import dev.quill.Tensor
import dev.quill.UniffiRustCallStatus
import dev.quill.asReadOnlyBuffer
import dev.quill.callBlocking
import dev.quill.copyInto
import dev.quill.copyTo
import dev.quill.directTensorBuffer
import dev.quill.elementCount
import dev.quill.elementSize
import dev.quill.fromByteArray
import dev.quill.fromByteBuffer
import dev.quill.fromFloatArray
import dev.quill.installLogger
import dev.quill.setLogger
import dev.quill.shapeLongs
import dev.quill.toByteArray
import dev.quill.toFloatArray
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext
import okhttp3.MediaType.Companion.toMediaType
import okhttp3.OkHttpClient
import okhttp3.Protocol
import okhttp3.Request
import okhttp3.RequestBody.Companion.toRequestBody
import java.io.File
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.time.Duration
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.extension.ExtendWith

/**
 * Kotlin/JVM micro-benchmark: warmed-up loops with bounded iteration counts, no JMH.
 * Run with `mvn -Pbench test` (scripts/bench-kotlin does, against the release build).
 * Prints a Markdown table and writes it to target/bench-kotlin.md.
 */
@ExtendWith(QuillServerExtension::class)
class QuillBench {
    private val rows = mutableListOf<String>()

    private inline fun timeNs(block: () -> Unit): Long {
        val t0 = System.nanoTime()
        block()
        return System.nanoTime() - t0
    }

    /**
     * Mean nanoseconds per iteration of [block]: warm up for [warmupMs], then measure
     * batches of [batch] iterations until [budgetMs] or [maxIterations] is reached.
     */
    private inline fun perOp(
        warmupMs: Long,
        budgetMs: Long,
        maxIterations: Long,
        batch: Int = 1,
        block: () -> Unit,
    ): Double {
        val warmEnd = System.nanoTime() + warmupMs * 1_000_000
        while (System.nanoTime() < warmEnd) repeat(batch) { block() }
        var n = 0L
        val t0 = System.nanoTime()
        val end = t0 + budgetMs * 1_000_000
        while (n < maxIterations && System.nanoTime() < end) {
            repeat(batch) { block() }
            n += batch
        }
        return (System.nanoTime() - t0).toDouble() / n
    }

    /** Sorted per-call latencies in ns: [warmup] calls, then up to [iterations] within [budgetMs]. */
    private inline fun latencies(warmup: Int, iterations: Int, budgetMs: Long, call: () -> Unit): LongArray {
        repeat(warmup) { call() }
        val out = LongArray(iterations)
        val end = System.nanoTime() + budgetMs * 1_000_000
        var n = 0
        while (n < iterations && System.nanoTime() < end) out[n++] = timeNs(call)
        return out.copyOf(n).also { it.sort() }
    }

    private fun LongArray.pct(p: Double) = this[((size - 1) * p).toInt()] / 1000.0

    private fun latencyRow(name: String, lat: LongArray, notes: String) {
        val mean = lat.average() / 1000.0
        rows += "| $name | %.1f µs mean, %.1f p50, %.1f p99 | $notes |".format(mean, lat.pct(0.5), lat.pct(0.99))
    }

    /** The native Rust floor (examples/bench_native.rs), driven over stdin like the Python bench. */
    private class Native(binary: String, url: String) : AutoCloseable {
        private val proc = ProcessBuilder(binary, url).redirectError(ProcessBuilder.Redirect.INHERIT).start()
        private val input = proc.outputStream.bufferedWriter()
        private val output = proc.inputStream.bufferedReader()

        /** Mean µs per call of `kind` over a window of [seconds]. */
        fun window(kind: String, size: Int, seconds: Double): Double {
            input.write("$kind $size $seconds\n")
            input.flush()
            return output.readLine().toDouble() * 1e6
        }

        override fun close() {
            input.close()
            proc.waitFor()
        }
    }

    private class NoOpLogger : QuillLogger {
        @Volatile var events = 0L
        override fun log(event: LogEvent) {
            events++
        }
    }

    @Test
    fun benchmark(server: QuillServer) {
        // 1. Trivial calls into the core: generated (JNA) against the JNI fast path.
        var sink = 0L
        val small = Tensor.fromByteArray(ByteArray(4), longArrayOf(4), DType.UINT8)
        val generated = perOp(1_000, 3_000, 2_000_000, batch = 100) { sink += small.numElements().toLong() }
        val fastCount = perOp(1_000, 3_000, 50_000_000, batch = 1000) { sink += small.elementCount }
        rows += "| `Tensor.numElements()` (generated: JNA, handle in, u64 out) | %.2f µs/call | two JNA calls (handle clone, method), each allocating a call-status `Structure` |".format(generated / 1e3)
        rows += "| `Tensor.elementCount` (JNI fast path) | %.3f µs/call | %.0f× faster; the object's handle borrowed under its call counter |".format(fastCount / 1e3, generated / fastCount)
        val status = perOp(1_000, 3_000, 2_000_000, batch = 100) { sink += UniffiRustCallStatus().code }
        rows += "| JNA call-status `Structure` allocation alone | %.2f µs | what every generated call pays, twice for a method |".format(status / 1e3)
        val shape = perOp(1_000, 3_000, 20_000_000, batch = 1000) { sink += small.shapeLongs().size }
        rows += "| `Tensor.shapeLongs()` (JNI, `long[]` out) | %.3f µs/call | an array crossing the boundary |".format(shape / 1e3)
        val meta = perOp(1_000, 3_000, 1_000_000, batch = 100) { sink += small.meta().shape.size }
        rows += "| `Tensor.meta()` (generated, record out) | %.2f µs/call | a record through a RustBuffer |".format(meta / 1e3)
        val elementSize = perOp(500, 2_000, 50_000_000, batch = 1000) { sink += DType.FLOAT32.elementSize }
        rows += "| `DType.FLOAT32.elementSize` (extras: the core's table read once) | %.3f µs/call | generated `dtypeElementSize()`: see the row above for a JNA call |".format(elementSize / 1e3)
        val error = perOp(500, 2_000, 1_000_000, batch = 10) {
            try {
                Tensor.fromByteArray(ByteArray(3), longArrayOf(4), DType.UINT8)
            } catch (e: QuillException.InvalidArgument) {
                sink += e.reason.length
            }
        }
        rows += "| a typed error through the fast path (`fromByteArray`, wrong length) | %.2f µs/op | thrown natively, lifted by the generated error converter |".format(error / 1e3)
        small.close()

        // 2. Tensor data in and out, 16 MiB.
        val size = 16 shl 20
        fun gibs(ns: Double) = size / (ns / 1e9) / (1 shl 30)
        val direct = directTensorBuffer(size)
        for (i in 0 until size step 4096) direct.put(i, i.toByte())
        val array = ByteArray(size) { it.toByte() }
        val floats = FloatArray(size / 4) { it.toFloat() }
        val fromDirect = perOp(300, 3_000, 300) { Tensor.fromByteBuffer(direct, longArrayOf(size.toLong()), DType.UINT8).close() }
        val fromArray = perOp(300, 3_000, 300) { Tensor.fromByteArray(array, longArrayOf(size.toLong()), DType.UINT8).close() }
        val fromFloats = perOp(300, 3_000, 300) { Tensor.fromFloatArray(floats).close() }
        val generatedIn = perOp(300, 3_000, 100) { Tensor.fromBytes(direct, listOf(size.toULong()), DType.UINT8, null).close() }
        rows += "| 16 MiB in: `Tensor.fromByteBuffer` (direct) | %.2f ms (%.1f GiB/s) | one copy, by the core |".format(fromDirect / 1e6, gibs(fromDirect))
        rows += "| 16 MiB in: `Tensor.fromByteArray` | %.2f ms (%.1f GiB/s) | one copy from the pinned array |".format(fromArray / 1e6, gibs(fromArray))
        rows += "| 16 MiB in: `Tensor.fromFloatArray` | %.2f ms (%.1f GiB/s) | one copy from the pinned array |".format(fromFloats / 1e6, gibs(fromFloats))
        rows += "| 16 MiB in: generated `Tensor.fromBytes` (direct buffer) | %.2f ms (%.1f GiB/s) | uniffi's path, for comparison |".format(generatedIn / 1e6, gibs(generatedIn))
        Tensor.fromByteArray(array, longArrayOf(size.toLong()), DType.UINT8).use { t ->
            val outDirect = directTensorBuffer(size)
            val copyTo = perOp(300, 3_000, 300) { outDirect.clear(); t.copyTo(outDirect) }
            val toArray = perOp(300, 3_000, 300) { sink += t.toByteArray().size }
            val reused = ByteArray(size)
            val copyInto = perOp(300, 3_000, 300) { sink += t.copyInto(reused) }
            val view = perOp(300, 2_000, 100_000, batch = 10) { sink += t.asReadOnlyBuffer().get(0) }
            val generatedOut = perOp(300, 3_000, 100) { sink += t.toBytes().size }
            rows += "| 16 MiB out: `Tensor.copyTo` (direct buffer) | %.2f ms (%.1f GiB/s) | one copy |".format(copyTo / 1e6, gibs(copyTo))
            rows += "| 16 MiB out: `Tensor.toByteArray` | %.2f ms (%.1f GiB/s) | one copy into a new array |".format(toArray / 1e6, gibs(toArray))
            rows += "| 16 MiB out: `Tensor.copyInto` (a reused `ByteArray`) | %.2f ms (%.1f GiB/s) | one copy, no allocation |".format(copyInto / 1e6, gibs(copyInto))
            rows += "| 16 MiB out: `Tensor.asReadOnlyBuffer` | %.2f µs | no copy: a direct buffer over the tensor's memory |".format(view / 1e3)
            rows += "| 16 MiB out: generated `Tensor.toBytes` | %.2f ms (%.1f GiB/s) | uniffi's path (a RustBuffer, then a `ByteArray`) |".format(generatedOut / 1e6, gibs(generatedOut))
        }
        Tensor.fromFloatArray(floats).use { t ->
            val toFloats = perOp(300, 3_000, 300) { sink += t.toFloatArray().size }
            rows += "| 16 MiB out: `Tensor.toFloatArray` | %.2f ms (%.1f GiB/s) | one copy into a new array |".format(toFloats / 1e6, gibs(toFloats))
        }

        // 3. Unary Echo, 1 KiB, sequential, against the bundled server; every client in
        //    the same run, interleaved with the native Rust floor.
        val body = ByteArray(1024) { (it * 31).toByte() }
        val echoUrl = "${server.baseUrl}/echo.v1.EchoService/Echo"
        val jdk = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(5)).build()
        val jdkRequest = HttpRequest.newBuilder(URI.create(echoUrl))
            .header("Content-Type", "application/proto")
            .POST(HttpRequest.BodyPublishers.ofByteArray(body))
            .build()
        val ok = OkHttpClient.Builder().protocols(listOf(Protocol.HTTP_1_1)).build()
        val okRequest = Request.Builder().url(echoUrl).post(body.toRequestBody("application/proto".toMediaType())).build()
        val nativeBinary = System.getProperty("quill.native")?.takeIf { it.isNotBlank() }
        QuillClient(server.baseUrl, 10_000u, false).use { client ->
            val calls = linkedMapOf<String, () -> Unit>(
                "`QuillClient.callBlocking` (JNI, calling thread)" to { client.callBlocking("echo.v1.EchoService", "Echo", body) },
                "`QuillClient.callBlocking` under `withContext(Dispatchers.IO)`" to {
                    runBlocking { withContext(Dispatchers.IO) { client.callBlocking("echo.v1.EchoService", "Echo", body) } }
                },
                "`QuillClient.call` (generated suspend, uniffi future)" to { runBlocking { client.call("echo.v1.EchoService", "Echo", body) } },
                "OkHttp 5 `execute()`" to { ok.newCall(okRequest).execute().use { it.body.bytes() } },
                "`java.net.http.HttpClient.send`" to { jdk.send(jdkRequest, HttpResponse.BodyHandlers.ofByteArray()) },
            )
            for ((_, call) in calls) repeat(300) { call() }
            assertArrayEquals(body, client.callBlocking("echo.v1.EchoService", "Echo", body))
            // Five rounds; each round gives every client 1,000 calls (or 1.5 s) in turn.
            val samples = calls.keys.associateWith { mutableListOf<Long>() }
            // Per round: each client's mean in µs, the same statistic as a native window.
            val roundMeans = calls.keys.associateWith { mutableListOf<Double>() }
            val nativeMeans = mutableListOf<Double>()
            val nativeQuill = mutableListOf<Double>()
            val native = nativeBinary?.let { Native(it, server.baseUrl) }
            native?.window("reqwest", 1024, 0.5)
            repeat(5) {
                for ((name, call) in calls) {
                    val round = latencies(0, 1_000, 1_500, call)
                    samples.getValue(name) += round.toList()
                    roundMeans.getValue(name) += round.average() / 1000.0
                }
                native?.let {
                    nativeMeans += it.window("reqwest", 1024, 1.0)
                    nativeQuill += it.window("quill_blocking", 1024, 1.0)
                }
            }
            native?.close()
            val floor = nativeMeans.sorted().getOrNull(nativeMeans.size / 2)
            if (floor != null) {
                rows += "| Echo 1 KiB, native Rust reqwest loop (the floor) | %.1f µs mean (median of 5 windows) | `examples/bench_native.rs`, same server, same run |".format(floor)
                val core = nativeQuill.sorted()[nativeQuill.size / 2]
                rows += "| Echo 1 KiB, quill's Rust client, blocking, from Rust | %.1f µs mean | the core's own cost over plain reqwest (%.2f×) |".format(core, core / floor)
            }
            for ((name, lat) in samples) {
                val sorted = lat.toLongArray().also { it.sort() }
                // The median of the per-round ratios, each between a round of this client
                // and the native window right after it (machine noise hits both alike).
                val ratio = if (floor == null) "" else {
                    val ratios = roundMeans.getValue(name).zip(nativeMeans) { m, n -> m / n }.sorted()
                    " (%.2f× the native floor; rounds %.2f–%.2f×)".format(ratios[ratios.size / 2], ratios.first(), ratios.last())
                }
                latencyRow("Echo 1 KiB, $name", sorted, "${sorted.size} sequential calls; HTTP/1.1 keep-alive$ratio")
            }

            // 4. The logger's cost: the fast call with no logger, then with a no-op one
            //    taking every event (two per call: connection reused, call finished).
            val fastCall = calls.values.first()
            val without = latencies(200, 3_000, 3_000, fastCall)
            for ((how, install) in listOf<Pair<String, (QuillLogger?) -> Unit>>(
                "`installLogger` (JNI upcall)" to { l -> installLogger(l, Level.DEBUG) },
                "generated `setLogger` (JNA callback)" to { l -> setLogger(l, Level.DEBUG) },
            )) {
                val logger = NoOpLogger()
                install(logger)
                val with = latencies(200, 3_000, 3_000, fastCall)
                install(null)
                val perCall = logger.events.toDouble() / (200 + with.size)
                val perEvent = (with.average() - without.average()) / 1000.0 / perCall
                rows += "| logger: Echo 1 KiB `callBlocking` without / with a no-op logger at DEBUG, $how | %.1f / %.1f µs mean | %.1f events per call, about %.1f µs each |".format(
                    without.average() / 1000, with.average() / 1000, perCall, perEvent,
                )
            }
        }

        val lib = System.getProperty("jna.library.path") ?: "?"
        val header = listOf(
            "Kotlin/JVM micro-benchmark — JDK ${System.getProperty("java.version")}, " +
                "${Runtime.getRuntime().availableProcessors()} cores, library from `${File(lib).canonicalFile.name}` " +
                "(sink $sink)",
            "",
            "| benchmark | result | notes |",
            "|---|---|---|",
        )
        val table = (header + rows).joinToString("\n")
        println("\n" + table + "\n")
        File("target").mkdirs()
        File("target/bench-kotlin.md").writeText(table + "\n")
    }
}
