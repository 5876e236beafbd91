package dev.quill

import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

class TensorTest {
    @Test
    fun `tensor from a FloatArray round trips through encode and decode byte-exactly`() {
        val values = FloatArray(6) { it * 1.5f - 2f }
        Tensor.fromFloatArray(values, longArrayOf(2, 3), name = "x").use { t ->
            assertEquals(listOf(2UL, 3UL), t.shape())
            assertArrayEquals(longArrayOf(2, 3), t.shapeLongs())
            assertEquals(DType.FLOAT32, t.dtype())
            assertEquals("x", t.name())
            assertEquals(6UL, t.numElements())
            assertEquals(24UL, t.sizeBytes())
            // Element bytes are little-endian.
            val expected = ByteBuffer.allocate(24).order(ByteOrder.LITTLE_ENDIAN)
            values.forEach { expected.putFloat(it) }
            assertArrayEquals(expected.array(), t.toBytes())

            val frames = t.encode()
            Tensor.decode(frames).use { back ->
                assertTrue(back.equals(t))
                assertEquals(t.meta(), back.meta())
                assertArrayEquals(values, back.toFloatArray())
                assertArrayEquals(frames, back.encode(), "re-encoding is byte-exact")
            }
        }
        // The default shape is one dimension.
        Tensor.fromFloatArray(floatArrayOf(1f, 2f)).use { assertEquals(listOf(2UL), it.shape()) }
    }

    @Test
    fun `tensor from a direct ByteBuffer round trips byte-exactly`() {
        val n = 3 * 100_000 // several 64 KiB TENSOR_PAYLOAD frames
        val direct = ByteBuffer.allocateDirect(n)
        for (i in 0 until n) direct.put(i, (i % 251).toByte())
        val raw = ByteArray(n).also { direct.duplicate().get(it) }

        // The generated constructor takes the direct buffer as it is (no JVM copy).
        Tensor.fromBytes(direct, listOf(3UL, 100_000UL), DType.UINT8, "ramp").use { t ->
            assertArrayEquals(raw, t.toBytes())
            val frames = t.encode()
            assertEquals(0x10.toByte(), frames[0], "starts with TENSOR_META")
            Tensor.decode(frames).use { back ->
                assertArrayEquals(raw, back.toBytes())
                assertEquals("ramp", back.name())
                assertArrayEquals(frames, back.encode())
            }
            // Decoding also accepts a direct ByteBuffer of frames.
            val buf = ByteBuffer.allocateDirect(frames.size).put(frames).flip()
            Tensor.decode(buf).use { assertTrue(it.equals(t)) }
        }

        // fromByteBuffer honours the position of a direct buffer and copies heap buffers.
        val offset = ByteBuffer.allocateDirect(8 + 16).order(ByteOrder.LITTLE_ENDIAN)
        offset.putLong(-1L)
        repeat(4) { offset.putInt(it + 10) }
        offset.flip().position(8)
        Tensor.fromByteBuffer(offset, longArrayOf(4), DType.INT32).use {
            assertArrayEquals(intArrayOf(10, 11, 12, 13), it.toIntArray())
        }
        val heap = ByteBuffer.wrap(ByteArray(16) { it.toByte() })
        Tensor.fromByteBuffer(heap, longArrayOf(2, 2), DType.FLOAT32).use {
            assertArrayEquals(ByteArray(16) { i -> i.toByte() }, it.toBytes())
        }
        Tensor.fromByteArray(ByteArray(4) { 7 }, longArrayOf(4), DType.INT8).use {
            assertArrayEquals(ByteArray(4) { 7 }, it.toBytes())
        }
    }

    @Test
    fun `other array types and zeros`() {
        Tensor.fromDoubleArray(doubleArrayOf(1.0, -2.5)).use { assertArrayEquals(doubleArrayOf(1.0, -2.5), it.toDoubleArray()) }
        Tensor.fromLongArray(longArrayOf(Long.MIN_VALUE, 3)).use { assertArrayEquals(longArrayOf(Long.MIN_VALUE, 3), it.toLongArray()) }
        Tensor.zeros(listOf(2UL, 0UL), DType.INT64, null).use { z ->
            assertEquals(0UL, z.sizeBytes())
            assertNull(z.name())
            Tensor.decode(z.encode()).use { assertTrue(it.equals(z)) }
        }
    }

    @Test
    fun `TENSOR_META payload matches the protocol section 6 example`() {
        // Shape [2, 3], float32, cpu, name "x".
        val metaPayload = hex(
            "02 | 02 00 00 00 00 00 00 00 | 03 00 00 00 00 00 00 00 | 01 | 00 | " +
                "18 00 00 00 00 00 00 00 | 01 00 | 78"
        )
        val data = ByteArray(24) { it.toByte() }
        val expected = hex("10 00 00 00 00 00 00 00 1e") + metaPayload + // TENSOR_META
            hex("11 00 00 00 00 00 00 00 18") + data + // TENSOR_PAYLOAD
            hex("02 00 00 00 00 00 00 00 00") // END_STREAM
        Tensor.fromByteArray(data, longArrayOf(2, 3), DType.FLOAT32, "x").use { t ->
            assertEquals(expected.toHex(), t.encode().toHex())
        }
        Tensor.decode(expected).use { t ->
            assertEquals(TensorMeta(listOf(2UL, 3UL), DType.FLOAT32, "x", Device.CPU), t.meta())
            assertArrayEquals(data, t.toBytes())
        }
        assertEquals(6UL, TensorMeta(listOf(2UL, 3UL), DType.FLOAT32, "x", Device.CPU).numElements())
        assertEquals(24UL, TensorMeta(listOf(2UL, 3UL), DType.FLOAT32, "x", Device.CPU).sizeBytes())
    }
}
