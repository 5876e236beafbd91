package dev.quill

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.extension.ExtendWith

/** zstd both ways with the decompression-bomb limit, and idempotent retries. */
@ExtendWith(QuillServerExtension::class)
class CompressionRetryTest {
    private val echo = "echo.v1.EchoService"
    private val fault = "test.v1.FaultService"

    private fun requests(c: QuillClient): Long = runBlocking {
        val json = c.callJson(fault, "Stats", "{}")
        Regex("\"requests\":(\\d+)").find(json)!!.groupValues[1].toLong()
    }

    @Test
    fun `zstd requests once the server says it decodes them, zstd replies, and the bomb limit`(
        server: QuillServer,
    ): Unit = runBlocking {
        val config = ClientConfig(
            baseUrl = server.baseUrl, enableCompression = true, maxDecodedSize = 1uL shl 20,
            httpVersion = HttpVersion.AUTO,
        )
        QuillClient.fromConfig(config).use { c ->
            val big = """{"pad": "${"q".repeat(4096)}"}"""
            // The first request goes plain: the server has not yet said it decodes zstd.
            assertTrue("content-encoding" !in c.callJson(echo, "Headers", big))
            val seen = c.callJson(echo, "Headers", big)
            assertTrue(Regex("\"content-encoding\":\"zstd\"").containsMatchIn(seen), seen)
            // A 1 MiB round trip, compressed both ways.
            val payload = ByteArray(1 shl 19) { (it % 256).toByte() }
            assertArrayEquals(payload, c.call(echo, "Echo", payload))
            // Bomb answers in zstd whatever was asked: within the limit it decodes ...
            assertEquals(100_000, c.call(fault, "Bomb", """{"bytes": 100000}""".toByteArray()).size)
            // ... and 1 GiB of zeros stops at max_decoded_size instead of filling memory.
            val e = assertThrows<QuillException.Protocol> {
                runBlocking { c.call(fault, "Bomb", """{"bytes": 1073741824}""".toByteArray()) }
            }
            assertTrue("max_decoded_size" in e.reason, e.reason)
        }
    }

    @Test
    fun `idempotent calls are retried on 503 and others are not`(server: QuillServer): Unit = runBlocking {
        val config = ClientConfig(baseUrl = server.baseUrl, maxRetries = 2u, httpVersion = HttpVersion.AUTO)
        QuillClient.fromConfig(config).use { c ->
            val error503 = """{"status": 503}"""
            var before = requests(c)
            val e = assertThrows<QuillException.Status> {
                runBlocking { c.callJson(fault, "Error", error503, idempotent = true) }
            }
            assertEquals(503.toUShort(), e.problem.status)
            // Three attempts, plus the Stats call.
            assertEquals(4, requests(c) - before)
            before = requests(c)
            assertThrows<QuillException.Status> { runBlocking { c.callJson(fault, "Error", error503) } }
            assertEquals(2, requests(c) - before)
            // A 400 is never retried.
            before = requests(c)
            assertThrows<QuillException.Status> {
                runBlocking { c.callJson(fault, "Error", """{"status": 400}""", idempotent = true) }
            }
            assertEquals(2, requests(c) - before)
        }
    }
}
