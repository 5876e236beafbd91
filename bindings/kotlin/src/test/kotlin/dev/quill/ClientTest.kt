package dev.quill

import java.net.ServerSocket
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.extension.ExtendWith

/** The client against the bundled server (started once for this class). */
@ExtendWith(QuillServerExtension::class)
class ClientTest {
    private fun client(server: QuillServer, timeoutMs: ULong = 10_000u, compression: Boolean = false) =
        QuillClient(server.baseUrl, timeoutMs, compression)

    /** `"key": <int>` of a compact JSON object. */
    private fun jsonInt(json: String, key: String): Long =
        Regex("\"$key\":(-?\\d+)").find(json)?.groupValues?.get(1)?.toLong()
            ?: error("no integer $key in $json")

    private fun jsonString(json: String, key: String): String =
        Regex("\"$key\":\"((?:[^\"\\\\]|\\\\.)*)\"").find(json)?.groupValues?.get(1)
            ?: error("no string $key in $json")

    @Test
    fun `unary call echoes bytes`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val body = ByteArray(1024) { (it * 7).toByte() }
            assertArrayEquals(body, c.call("echo.v1.EchoService", "Echo", body))
            assertArrayEquals(ByteArray(0), c.call("echo.v1.EchoService", "Echo", ByteArray(0)))
            val big = ByteArray(1 shl 20) { it.toByte() }
            assertArrayEquals(big, c.call("echo.v1.EchoService", "Echo", big, idempotent = true))
            assertEquals(server.baseUrl, c.baseUrl())
        }
    }

    @Test
    fun `http2 over h2c multiplexes calls and names its profile`(server: QuillServer): Unit = runBlocking {
        QuillClient.fromConfig(ClientConfig(baseUrl = server.baseUrl, httpVersion = HttpVersion.HTTP2)).use { c ->
            assertEquals(null, c.selectedPrism())
            val seen = c.callJson("echo.v1.EchoService", "Headers", "{}")
            assertEquals("prism=turbo", jsonString(seen, "prefer"))
            assertEquals("turbo", c.selectedPrism())
            val replies = coroutineScope {
                (0 until 50).map { i ->
                    async { c.call("echo.v1.EchoService", "Echo", "m$i".toByteArray()).decodeToString() }
                }.awaitAll()
            }
            assertEquals((0 until 50).map { "m$it" }, replies)
        }
        client(server).use { c ->
            c.callJson("echo.v1.EchoService", "Echo", "{}")
            assertEquals("classic", c.selectedPrism()) // cleartext AUTO is HTTP/1.1
        }
    }

    @Test
    fun `http3 over QUIC calls, streams and names its profile`(): Unit = runBlocking {
        val dir = java.nio.file.Files.createTempDirectory("quill-tls")
        val tls = QuillServerExtension.start(QuillServerExtension.TOKEN, "--tls-self-signed", dir.toString())
        try {
            val ca = dir.resolve("cert.pem").toFile().readBytes()
            val config = ClientConfig(baseUrl = tls.baseUrl, httpVersion = HttpVersion.HTTP3, caCertPem = ca)
            QuillClient.fromConfig(config).use { c ->
                val seen = c.callJson("echo.v1.EchoService", "Headers", "{}")
                assertEquals("prism=hyper", jsonString(seen, "prefer"))
                assertEquals("hyper", c.selectedPrism())
                val replies = coroutineScope {
                    (0 until 20).map { i ->
                        async { c.call("echo.v1.EchoService", "Echo", "m$i".toByteArray()).decodeToString() }
                    }.awaitAll()
                }
                assertEquals((0 until 20).map { "m$it" }, replies)
                val sent = (0 until 5).map { "bidi $it".toByteArray() }
                val echoed = c.bidiStream("echo.v1.EchoService", "BidiEcho", kotlinx.coroutines.flow.flowOf(*sent.toTypedArray()))
                    .map { String(it) }.toList()
                assertEquals(sent.map { String(it) }, echoed)
            }
        } finally {
            QuillServerExtension.stop(tls)
            dir.toFile().deleteRecursively()
        }
    }

    @Test
    fun `zstd compression both ways`(server: QuillServer): Unit = runBlocking {
        client(server, compression = true).use { c ->
            assertTrue(c.compressionEnabled())
            val body = "quill ".repeat(1000).toByteArray()
            assertArrayEquals(body, c.call("echo.v1.EchoService", "Echo", body))
        }
    }

    @Test
    fun `callJson Generate returns the demo tokens`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val reply = c.callJson("inference.v1.LLMService", "Generate", """{"prompt": "Alice", "max_tokens": 5, "seed": 7}""")
            assertEquals("length", jsonString(reply, "finish_reason"))
            assertEquals(5, Regex("\"position\":").findAll(reply).count(), reply)
            val again = c.callJson("inference.v1.LLMService", "Generate", """{"prompt": "Alice", "max_tokens": 5, "seed": 7}""")
            assertEquals(reply, again, "deterministic")
        }
    }

    @Test
    fun `configured headers reach the server and secrets are redacted`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            c.setBearerToken("tok-1")
            c.setApiKey("key-1")
            c.setHeader("X-Custom", "custom-value")
            val seen = c.callJson("echo.v1.EchoService", "Headers", "{}")
            assertEquals("Bearer tok-1", jsonString(seen, "authorization"))
            assertEquals("key-1", jsonString(seen, "x-api-key"))
            assertEquals("custom-value", jsonString(seen, "x-custom"))
            assertEquals(
                listOf(
                    HeaderEntry("Authorization", "<redacted>"),
                    HeaderEntry("X-API-Key", "<redacted>"),
                    HeaderEntry("X-Custom", "custom-value"),
                ),
                c.headers(),
            )
            assertTrue(c.removeHeader("x-custom"))
            assertTrue(!c.callJson("echo.v1.EchoService", "Headers", "{}").contains("x-custom"))
            val bad = assertThrows<QuillException.InvalidArgument> { c.setHeader("X-Evil", "a\r\nb") }
            assertTrue(!bad.reason.contains("a\r\nb"))
        }
    }

    @Test
    fun `auth route is 401 without the token and OK with it`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val e = assertThrows<QuillException.Status> {
                runBlocking { c.callJson("test.v1.FaultService", "Auth", "{}") }
            }
            assertEquals(401, e.problem.status.toInt())
            assertEquals("Unauthenticated", e.problem.title)
            assertTrue(!e.message.contains(server.token))
            c.setBearerToken(server.token)
            assertEquals(true, c.callJson("test.v1.FaultService", "Auth", "{}").contains("\"ok\":true"))
        }
    }

    @Test
    fun `plain-text and HTML error bodies and an unknown route`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            for ((method, status, text) in listOf(Triple("PlainText", 502, "bad gateway from proxy"), Triple("Html", 503, "<html"))) {
                val e = assertThrows<QuillException.Status> {
                    runBlocking { c.call("test.v1.FaultService", method, ByteArray(0)) }
                }
                assertEquals(status, e.problem.status.toInt())
                assertTrue(e.problem.body.contains(text), e.problem.body)
                assertEquals(null, e.problem.title)
            }
            val missing = assertThrows<QuillException.Status> {
                runBlocking { c.call("nope.v1.Missing", "Method", ByteArray(0)) }
            }
            assertEquals(404, missing.problem.status.toInt())
            assertEquals("urn:quill:error:404", missing.problem.problemType)
        }
    }

    @Test
    fun `Problem Details of an error response`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val request = """{"status": 429, "title": "Quota exceeded", "detail": "slow down", "retry_after": 2,
                "proto_type": "pkg.QuotaError", "proto_detail_base64": "CgRwZWVy", "instance": "/x"}"""
            val e = assertThrows<QuillException.Status> {
                runBlocking { c.callJson("test.v1.FaultService", "Error", request) }
            }
            val p = e.problem
            assertEquals(429, p.status.toInt())
            assertEquals("urn:quill:error:429", p.problemType)
            assertEquals("Quota exceeded", p.title)
            assertEquals("slow down", p.detail)
            assertEquals("/x", p.instance)
            assertEquals("pkg.QuotaError", p.protoType)
            assertArrayEquals(byteArrayOf(0x0a, 0x04) + "peer".toByteArray(), p.protoDetail)
            assertEquals(2000UL, p.retryAfterMs)
            assertTrue(p.body.contains("\"extra\""), p.body)
        }
    }

    @Test
    fun `a slow call hits the client timeout`(server: QuillServer): Unit = runBlocking {
        client(server, timeoutMs = 300u).use { c ->
            val start = System.nanoTime()
            assertThrows<QuillException.Timeout> {
                runBlocking { c.callJson("test.v1.FaultService", "Slow", """{"ms": 3000}""") }
            }
            val ms = (System.nanoTime() - start) / 1_000_000
            assertTrue(ms in 250..2500, "timed out after $ms ms")
        }
    }

    @Test
    fun `a closed port is a Connection error`(): Unit = runBlocking {
        val port = ServerSocket(0).use { it.localPort }
        QuillClient("http://127.0.0.1:$port", 5_000u, false).use { c ->
            assertThrows<QuillException.Connection> {
                runBlocking { c.call("echo.v1.EchoService", "Echo", ByteArray(1)) }
            }
        }
    }

    @Test
    fun `GenerateStream collected as a Flow of token batches`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val request = """{"prompt": "Alice", "max_tokens": 12, "batch_size": 4}"""
            val batches = c.tokenStream(
                "inference.v1.LLMService", "GenerateStream", request.toByteArray(), contentTypeJson = true,
            ).asFlow().toList()
            assertEquals(listOf(4, 4, 4), batches.map { it.tokens.size })
            assertEquals(listOf(false, false, true), batches.map { it.isFinal })
            assertTrue(batches.all { it.sequenceId == 1u })
            val tokens = batches.flatMap { it.tokens }
            assertEquals((0u until 12u).toList(), tokens.map { it.position })
            // The unary Generate gives the same text for the same request.
            val unary = c.callJson("inference.v1.LLMService", "Generate", request)
            assertEquals(jsonString(unary, "text"), batches.joinToString("") { it.text() })
        }
    }

    @Test
    fun `raw message stream as a Flow, and a truncated stream fails`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val messages = c.serverStream("test.v1.FaultService", "StreamCombined", ByteArray(0))
                .asFlow().map { String(it) }.toList()
            assertEquals(listOf("one", "two", "three"), messages)

            val received = mutableListOf<String>()
            val e = assertThrows<QuillException.Stream> {
                runBlocking {
                    c.serverStream("test.v1.FaultService", "StreamCut", """{"messages": 2}""".toByteArray(), true)
                        .asFlow().collect { received += String(it) }
                }
            }
            assertEquals(listOf("message 0", "message 1"), received, e.reason)
        }
    }

    @Test
    fun `stopping a Flow early cancels the stream on the server`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            fun stats() = runBlocking { c.callJson("test.v1.FaultService", "Stats", "{}") }
            val cancelledBefore = jsonInt(stats(), "cancelled_streams")
            val firstTwo = c.serverStream(
                "test.v1.FaultService", "StreamSlow", """{"messages": 100, "interval_ms": 20}""".toByteArray(), true,
            ).asFlow().take(2).map { String(it) }.toList()
            assertEquals(listOf("tick 0", "tick 1"), firstTwo)
            // The server notices at its next write (every 20 ms); allow it a few seconds.
            var s = stats()
            val deadline = System.nanoTime() + 5_000_000_000L
            while (jsonInt(s, "cancelled_streams") == cancelledBefore && System.nanoTime() < deadline) {
                delay(20)
                s = stats()
            }
            assertEquals(cancelledBefore + 1, jsonInt(s, "cancelled_streams"), s)
            assertEquals(0L, jsonInt(s, "open_streams"), s)
        }
    }

    @Test
    fun `tensor upload and download`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val data = ByteArray(200_000) { (it % 251).toByte() }
            val reply = Tensor.fromByteArray(data, longArrayOf(50_000), DType.FLOAT32, "up").use { t ->
                String(c.sendTensor("tensor.v1.TensorService", "Upload", t))
            }
            assertEquals(200_000L, jsonInt(reply, "size_bytes"))
            var h = -0x340d631b7bdddcdbL // FNV-1a 64 offset basis
            for (b in data) h = (h xor (b.toLong() and 0xff)) * 0x100000001b3L
            assertEquals("%016x".format(h), jsonString(reply, "fnv1a64"))

            c.callTensor(
                "tensor.v1.TensorService", "Download", """{"shape": [2, 3], "dtype": "uint8"}""".toByteArray(), true,
            ).use { t ->
                assertEquals(listOf(2UL, 3UL), t.shape())
                assertArrayEquals(ByteArray(6) { it.toByte() }, t.toBytes())
            }
        }
    }

    @Test
    fun `50 coroutines share one client`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            coroutineScope {
                repeat(50) { i ->
                    launch(Dispatchers.IO) {
                        val body = "message $i ".repeat(i + 1).toByteArray()
                        assertArrayEquals(body, c.call("echo.v1.EchoService", "Echo", body))
                    }
                }
            }
        }
    }
}
