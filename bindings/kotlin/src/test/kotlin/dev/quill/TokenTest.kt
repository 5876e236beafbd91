package dev.quill

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** Token and TokenBatch encodings of protocol §8 (big-endian). */
class TokenTest {
    @Test
    fun `token with text and logprob matches the protocol example`() {
        val token = Token(id = 42u, position = 0u, text = "hello", logprob = -0.5f)
        val wire = "00 00 00 2a 00 00 00 00 03 bf 00 00 00 00 05 68 65 6c 6c 6f"
        assertEquals(wire, token.encode().toHex())
        assertEquals(token, Token.decode(hex(wire)))
        assertEquals(token, decodeToken(java.nio.ByteBuffer.allocateDirect(20).put(hex(wire)).flip()))
    }

    @Test
    fun `bare token matches the protocol example`() {
        val token = Token(id = 7u, position = 1u)
        val wire = "00 00 00 07 00 00 00 01 00"
        assertEquals(wire, token.encode().toHex())
        val back = Token.decode(hex(wire))
        assertEquals(token, back)
        assertNull(back.text)
        assertNull(back.logprob)
        assertNull(back.prob())
    }

    @Test
    fun `token batch layout and round trip`() {
        val batch = TokenBatch(tokens = listOf(Token(7u, 1u)), sequenceId = 1u, isFinal = true)
        val wire = "03 00 00 00 01 00 01 00 00 00 07 00 00 00 01 00"
        assertEquals(wire, batch.encode().toHex())
        assertEquals(batch, TokenBatch.decode(hex(wire)))
        assertEquals(TokenBatch(tokens = emptyList()), decodeTokenBatch(java.nio.ByteBuffer.allocateDirect(3)))

        val words = TokenBatch(
            tokens = listOf(Token(1u, 0u, "Hello", -0.25f), Token(3u, 1u, " World"), Token(9u, 2u, isSpecial = true)),
        )
        val back = TokenBatch.decode(words.encode())
        assertEquals(words, back)
        assertEquals("Hello World", back.text())
        assertEquals(listOf(1u, 3u, 9u), back.tokenIds())
        // Metadata lives in memory only; the wire does not carry it.
        val withMeta = words.copy(metadata = mapOf("model" to "demo"))
        assertEquals(words.encode().toHex(), withMeta.encode().toHex())
    }

    @Test
    fun `probability and end of sequence`() {
        assertEquals(1.0, Token(2u, 9u, "</s>", 0.0f).prob())
        assertFalse(Token(2u, 9u, "</s>").isEos())
        assertTrue(Token(2u, 9u, "</s>", isSpecial = true).isEos())
        assertTrue(Token(2u, 9u, "<|eot_id|>", isSpecial = true).isEos())
    }
}
