package dev.quill

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** The dtype table of protocol §7, as the core exports it. */
class DTypeTest {
    private val table = listOf(
        Triple(DType.FLOAT32, "float32", 4 to 1),
        Triple(DType.FLOAT16, "float16", 2 to 2),
        Triple(DType.BFLOAT16, "bfloat16", 2 to 3),
        Triple(DType.FLOAT64, "float64", 8 to 4),
        Triple(DType.INT8, "int8", 1 to 5),
        Triple(DType.INT32, "int32", 4 to 6),
        Triple(DType.INT64, "int64", 8 to 7),
        Triple(DType.UINT8, "uint8", 1 to 8),
        Triple(DType.BOOL, "bool", 1 to 9),
    )

    @Test
    fun `names, sizes and wire numbers match protocol section 7`() {
        assertEquals(DType.values().toList(), table.map { it.first }, "every dtype, in wire order")
        for ((dtype, name, sizeAndWire) in table) {
            val (size, wire) = sizeAndWire
            val info = dtype.info()
            assertEquals(name, info.name)
            assertEquals(name, dtype.canonicalName)
            assertEquals(size.toUInt(), info.elementSize)
            assertEquals(size, dtype.elementSize)
            assertEquals(wire.toUByte(), info.wireValue)
            assertEquals(wire, dtype.wireValue)
            assertEquals(dtype, dtypeFromWireValue(wire.toUByte()))
            assertEquals(dtype, DType.fromWireValue(wire))
            assertEquals(dtype, dtypeFromName(name))
            assertEquals(dtype, DType.fromName(name))
        }
        assertEquals(DType.BOOL, DType.fromName("bool_"))
    }

    @Test
    fun `float, integer and signed predicates`() {
        val bf16 = DType.BFLOAT16.info()
        assertTrue(bf16.isFloat && bf16.isSigned)
        val u8 = DType.UINT8.info()
        assertTrue(u8.isInteger && !u8.isSigned)
        assertTrue(DType.INT8.info().isSigned)
        val b = DType.BOOL.info()
        assertFalse(b.isFloat || b.isInteger || b.isSigned)
    }

    @Test
    fun `unknown wire numbers and names are UnsupportedDType`() {
        for (v in listOf(0, 10, 255)) {
            val e = assertThrows<QuillException.UnsupportedDType> { DType.fromWireValue(v) }
            assertTrue(e.reason.contains("$v"), e.reason)
        }
        assertThrows<QuillException.UnsupportedDType> { DType.fromWireValue(-1) }
        val e = assertThrows<QuillException.UnsupportedDType> { dtypeFromName("complex64") }
        assertTrue(e.reason.contains("float32"), "lists the supported names: ${e.reason}")
    }
}
