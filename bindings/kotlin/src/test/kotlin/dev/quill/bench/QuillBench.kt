package dev.quill.bench

import dev.quill.DType
import dev.quill.QuillClient
import dev.quill.QuillServer
import dev.quill.QuillServerExtension
import dev.quill.Tensor
import dev.quill.Token
import dev.quill.decode
import dev.quill.fromByteArray
import java.io.File
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.ByteBuffer
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

    @Test
    fun benchmark(server: QuillServer) {
        // 1. Trivial calls into the core.
        var sink = 0L
        val trivial = perOp(1_000, 3_000, 5_000_000, batch = 100) { sink += DType.FLOAT32.info().elementSize.toLong() }
        rows += "| `DType.FLOAT32.info()` (enum in, record out) | %.2f µs/call | enum and record lowered and lifted through RustBuffers |".format(trivial / 1e3)
        val small = Tensor.fromByteArray(ByteArray(4), longArrayOf(4), DType.UINT8)
        val handleOnly = perOp(1_000, 3_000, 5_000_000, batch = 100) { sink += small.numElements().toLong() }
        small.close()
        rows += "| `Tensor.numElements()` (object handle in, u64 out) | %.2f µs/call | primitives only: the floor of a uniffi/JNA call |".format(handleOnly / 1e3)
        val token = Token(42u, 0u, "hello", -0.5f)
        val tokenRound = perOp(1_000, 3_000, 1_000_000, batch = 10) { sink += Token.decode(token.encode()).id.toLong() }
        rows += "| `Token.encode()` + `Token.decode()` (20 B) | %.2f µs/op | record and bytes through RustBuffers, decode via a direct buffer |".format(tokenRound / 1e3)

        // 2. Tensor creation from 16 MiB.
        val size = 16 shl 20
        val shape = listOf(size.toULong())
        val direct = ByteBuffer.allocateDirect(size)
        for (i in 0 until size step 4096) direct.put(i, i.toByte())
        val array = ByteArray(size) { it.toByte() }
        val fromDirect = perOp(500, 4_000, 200) { Tensor.fromBytes(direct, shape, DType.UINT8, null).close() }
        val fromArray = perOp(500, 4_000, 200) { Tensor.fromByteArray(array, longArrayOf(size.toLong()), DType.UINT8).close() }
        fun gibs(ns: Double) = size / (ns / 1e9) / (1 shl 30)
        rows += "| Tensor from 16 MiB direct `ByteBuffer` | %.2f ms (%.1f GiB/s) | `Tensor.fromBytes`: pointer passed, one copy in Rust |".format(fromDirect / 1e6, gibs(fromDirect))
        rows += "| Tensor from 16 MiB `ByteArray` | %.2f ms (%.1f GiB/s) | `Tensor.fromByteArray`: copy into a new direct buffer, then the Rust copy |".format(fromArray / 1e6, gibs(fromArray))

        // 3. Unary Echo, 1 KiB, sequential, against the bundled server.
        val body = ByteArray(1024) { (it * 31).toByte() }
        QuillClient(server.baseUrl, 10_000u, false).use { client ->
            val quill = runBlocking {
                assertArrayEquals(body, client.call("echo.v1.EchoService", "Echo", body))
                latencies(500, 5_000, 8_000) { client.call("echo.v1.EchoService", "Echo", body) }
            }
            latencyRow("Echo 1 KiB, `QuillClient.call` (suspend)", quill, "${quill.size} sequential calls in one `runBlocking`; HTTP/1.1 keep-alive")
        }
        val http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(5)).build()
        val request = HttpRequest.newBuilder(URI.create("${server.baseUrl}/echo.v1.EchoService/Echo"))
            .header("Content-Type", "application/proto")
            .POST(HttpRequest.BodyPublishers.ofByteArray(body))
            .build()
        assertArrayEquals(body, http.send(request, HttpResponse.BodyHandlers.ofByteArray()).body())
        val jdk = latencies(500, 5_000, 8_000) { http.send(request, HttpResponse.BodyHandlers.ofByteArray()) }
        latencyRow("Echo 1 KiB, `java.net.http.HttpClient.send`", jdk, "${jdk.size} sequential blocking calls; HTTP/1.1 keep-alive, same route")

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
