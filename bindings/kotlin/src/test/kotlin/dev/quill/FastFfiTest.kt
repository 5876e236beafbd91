package dev.quill

import java.nio.ByteOrder
import java.nio.ReadOnlyBufferException
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.extension.ExtendWith

/** The JVM fast path (FastFfi.kt over src/ffi/jvm.rs) against the generated methods. */
@ExtendWith(QuillServerExtension::class)
class FastFfiTest {
    @Test
    fun `accessors agree with the generated methods`() {
        Tensor.fromFloatArray(FloatArray(24) { it.toFloat() }, longArrayOf(2, 3, 4), "x").use { t ->
            assertEquals(t.numElements().toLong(), t.elementCount)
            assertEquals(t.sizeBytes().toLong(), t.byteCount)
            assertEquals(t.dtype(), t.elementType)
            assertArrayEquals(t.shape().map { it.toLong() }.toLongArray(), t.shapeLongs())
        }
    }

    @Test
    fun `arrays in and out take the exact elements`() {
        val floats = FloatArray(1000) { it * 0.5f - 7f }
        Tensor.fromFloatArray(floats).use { t ->
            assertArrayEquals(floats, t.toFloatArray())
            // The generated copy path sees the same little-endian bytes.
            val viaBytes = java.nio.ByteBuffer.wrap(t.toBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
            assertEquals(floats[999], viaBytes.get(999))
        }
        val longs = LongArray(100) { Long.MIN_VALUE + it * 3 }
        Tensor.fromLongArray(longs, longArrayOf(10, 10)).use { assertArrayEquals(longs, it.toLongArray()) }
        val ints = IntArray(7) { -it }
        Tensor.fromIntArray(ints).use { assertArrayEquals(ints, it.toIntArray()) }
        val doubles = DoubleArray(5) { Math.PI * it }
        Tensor.fromDoubleArray(doubles).use { assertArrayEquals(doubles, it.toDoubleArray()) }
        val bytes = ByteArray(300) { it.toByte() }
        Tensor.fromByteArray(bytes, longArrayOf(300), DType.UINT8).use { assertArrayEquals(bytes, it.toByteArray()) }
        // A direct buffer is read from its position to its limit.
        val direct = directTensorBuffer(16).apply { for (i in 0 until 16) put(i, i.toByte()) }
        direct.position(4).limit(12)
        Tensor.fromByteBuffer(direct, longArrayOf(8), DType.UINT8).use { t ->
            assertArrayEquals(ByteArray(8) { (it + 4).toByte() }, t.toByteArray())
            // Into a reused array, at an offset.
            val reused = ByteArray(12) { -1 }
            assertEquals(10, t.copyInto(reused, 2))
            assertArrayEquals(byteArrayOf(-1, -1) + ByteArray(8) { (it + 4).toByte() } + byteArrayOf(-1, -1), reused)
            val out = directTensorBuffer(10).position(2)
            t.copyTo(out)
            assertEquals(10, out.position())
            assertEquals(4.toByte(), out.get(2))
        }
    }

    @Test
    fun `a zero-copy view is read-only and outlives close`() {
        val floats = FloatArray(64) { it.toFloat() }
        val t = Tensor.fromFloatArray(floats)
        val view = t.asReadOnlyBuffer()
        t.close()
        System.gc()
        assertTrue(view.isReadOnly && view.isDirect)
        assertEquals(256, view.remaining())
        assertEquals(63f, view.asFloatBuffer().get(63))
        assertThrows<ReadOnlyBufferException> { view.put(0, 1) }
        // Many views, dropped: each releases its reference when collected.
        Tensor.fromByteArray(ByteArray(1 shl 20), longArrayOf(1L shl 20), DType.UINT8).use { big ->
            repeat(2_000) { big.asReadOnlyBuffer().get(0) }
        }
    }

    @Test
    fun `bad input is a typed error`() {
        assertThrows<QuillException.InvalidArgument> {
            Tensor.fromByteArray(ByteArray(5), longArrayOf(2), DType.FLOAT32)
        }
        assertThrows<QuillException.InvalidArgument> {
            Tensor.fromFloatArray(FloatArray(4), longArrayOf(-1, -4))
        }
        Tensor.fromIntArray(IntArray(3)).use { t ->
            assertThrows<QuillException.UnsupportedDType> { t.toFloatArray() }
            assertThrows<QuillException.InvalidArgument> { t.copyTo(directTensorBuffer(4)) }
            // 12 bytes do not fit 16 from offset 8, nor anywhere from a negative offset.
            assertThrows<QuillException.InvalidArgument> { t.copyInto(ByteArray(16), 8) }
            assertThrows<QuillException.InvalidArgument> { t.copyInto(ByteArray(16), -1) }
        }
        val closed = Tensor.fromIntArray(IntArray(3)).also { it.close() }
        assertThrows<IllegalStateException> { closed.elementCount }
    }

    @Test
    fun `closing while other threads use the fast path never crashes`() {
        val pool = Executors.newFixedThreadPool(4)
        repeat(200) {
            val t = Tensor.fromFloatArray(FloatArray(256))
            val start = CountDownLatch(1)
            val readers = (0 until 3).map {
                pool.submit {
                    start.await()
                    repeat(200) {
                        try {
                            assertEquals(256L, t.elementCount)
                            assertEquals(256, t.toFloatArray().size)
                        } catch (_: IllegalStateException) {
                            // closed meanwhile: the one allowed outcome besides success
                        }
                    }
                }
            }
            start.countDown()
            t.close()
            readers.forEach { it.get(10, TimeUnit.SECONDS) }
        }
        pool.shutdown()
    }

    @Test
    fun `callBlocking makes the call and maps errors`(server: QuillServer) {
        QuillClient(server.baseUrl, 300u, false).use { c ->
            val body = ByteArray(1024) { (it * 7).toByte() }
            assertArrayEquals(body, c.callBlocking("echo.v1.EchoService", "Echo", body))
            val missing = assertThrows<QuillException.Status> { c.callBlocking("nope.v1.Missing", "M", ByteArray(0)) }
            assertEquals(404, missing.problem.status.toInt())
            assertThrows<QuillException.Timeout> {
                c.callBlocking("test.v1.FaultService", "Slow", """{"ms": 3000}""".toByteArray())
            }
            // Same client, suspend path, still fine.
            assertArrayEquals(body, runBlocking { c.call("echo.v1.EchoService", "Echo", body) })
        }
    }
}
