package dev.quill

import java.nio.ByteBuffer
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** Bad input throws the QuillException subclass a caller would catch. */
class BadInputTest {
    @Test
    fun `wrong byte length is InvalidArgument`() {
        val e = assertThrows<QuillException.InvalidArgument> {
            Tensor.fromBytes(ByteBuffer.allocateDirect(23), listOf(2UL, 3UL), DType.FLOAT32, null)
        }
        assertTrue(e.reason.contains("23 bytes") && e.reason.contains("24"), e.reason)
        assertTrue(e.message.contains("23 bytes"), e.message)
        assertThrows<QuillException.InvalidArgument> { Tensor.fromFloatArray(FloatArray(5), longArrayOf(2, 3)) }
        assertThrows<QuillException.InvalidArgument> { Tensor.fromFloatArray(FloatArray(6), longArrayOf(-2, -3)) }
        assertThrows<QuillException.InvalidArgument> { Tensor.zeros(List(256) { 1UL }, DType.UINT8, null) }
        assertThrows<QuillException.InvalidArgument> {
            Token(1u, 0u, "x".repeat(65_536)).encode()
        }
    }

    @Test
    fun `unknown dtype number is UnsupportedDType`() {
        assertThrows<QuillException.UnsupportedDType> { dtypeFromWireValue(0u) }
        assertThrows<QuillException.UnsupportedDType> { dtypeFromWireValue(10u) }
        // The same in a TENSOR_META frame: dtype byte 0x0a.
        val frames = hex("10 00 00 00 00 00 00 00 15 | 01 | 01 00 00 00 00 00 00 00 | 0a | 00 | 01 00 00 00 00 00 00 00 | 00 00")
        assertThrows<QuillException.UnsupportedDType> { Tensor.decode(frames) }
    }

    @Test
    fun `truncated token and batch are Decode errors`() {
        val good = Token(42u, 0u, "hello", -0.5f).encode()
        for (cut in 0 until good.size) {
            assertThrows<QuillException.Decode>("cut at $cut") { Token.decode(good.copyOf(cut)) }
        }
        val extra = assertThrows<QuillException.Decode> { Token.decode(good + 0) }
        assertTrue(extra.reason.contains("left over"), extra.reason)
        assertThrows<QuillException.Decode> { Token.decode(hex("00 00 00 01 00 00 00 00 01 00 02 c3 28")) } // bad UTF-8
        assertThrows<QuillException.Decode> { TokenBatch.decode(hex("00 ff ff")) }
        val frames = Tensor.fromFloatArray(FloatArray(4)).use { it.encode() }
        assertThrows<QuillException.Decode> { Tensor.decode(frames.copyOf(frames.size - 1)) }
    }

    @Test
    fun `core rules reach Kotlin`() {
        // A bool element is 0 or 1.
        val odd = ByteBuffer.allocateDirect(3).put(byteArrayOf(0, 1, 2)).flip() as ByteBuffer
        val e = assertThrows<QuillException.InvalidArgument> { Tensor.fromBytes(odd, listOf(3UL), DType.BOOL, null) }
        assertTrue(e.reason.contains("must be 0 or 1"), e.reason)
        // A shape no array can index, even with a zero dim.
        assertThrows<QuillException.InvalidArgument> { Tensor.zeros(listOf(0UL, 1UL shl 63), DType.UINT8, null) }
        Tensor.zeros(listOf(0UL, (1UL shl 63) - 1UL), DType.UINT8, null).close()
        // Timeouts are bounded at 30 days.
        val t = assertThrows<QuillException.InvalidArgument> { QuillClient("http://127.0.0.1:9", 2_592_000_001UL) }
        assertTrue(t.reason.contains("timeout_ms"), t.reason)
    }

    @Test
    fun `errors are a sealed hierarchy`() {
        val e: Exception = assertThrows<QuillException> { dtypeFromName("nope") }
        val kind = when (e as QuillException) {
            is QuillException.UnsupportedDType -> "dtype"
            is QuillException.InvalidArgument, is QuillException.Decode, is QuillException.Connection,
            is QuillException.Timeout, is QuillException.Status, is QuillException.Stream,
            is QuillException.Protocol, is QuillException.Cancelled -> "other"
        }
        assertTrue(kind == "dtype")
    }
}
