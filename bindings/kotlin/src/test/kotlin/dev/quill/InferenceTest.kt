package dev.quill

import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.flowOf
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.fail
import org.junit.jupiter.api.extension.ExtendWith

/**
 * The typed `quill.inference.v1.InferenceService` API (generate, embed, chat, timing)
 * and its coroutine extras, against the bundled server's demo generator.
 */
@ExtendWith(QuillServerExtension::class)
class InferenceTest {
    private val fault = "test.v1.FaultService"
    private val prompt = listOf(101u, 2023u, 7u)

    // The benchmark mode's long stream: far more bytes than socket buffers hold, so the
    // server is still writing when the client stops.
    private val endless = GenerateRequest(inputIds = prompt, maxNewTokens = 1_000_000u)
    private val pregenerate = listOf(HeaderEntry("quill-pregenerate", "64"))

    private fun client(server: QuillServer) = QuillClient(server.baseUrl, 10_000u, false)

    private fun greedy(maxNewTokens: UInt = 20u, stop: List<UInt> = listOf()) =
        GenerateRequest(inputIds = prompt, maxNewTokens = maxNewTokens, temperature = 0f, stopTokenIds = stop)

    private suspend fun stat(c: QuillClient, key: String): Long {
        val json = c.callJson(fault, "Stats", "{}")
        return Regex("\"$key\":(-?\\d+)").find(json)?.groupValues?.get(1)?.toLong() ?: error("no $key in $json")
    }

    /** Polls `Stats` until [ok] holds for it (fails after [limitMs]). */
    private suspend fun awaitStats(c: QuillClient, limitMs: Long, what: String, ok: suspend () -> Boolean) {
        val deadline = System.nanoTime() + limitMs * 1_000_000
        while (!ok()) {
            assertTrue(System.nanoTime() < deadline, "the server's Stats did not show $what within $limitMs ms")
            delay(10)
        }
    }

    /** Every response of one `generate`, read with the generated `next()`. */
    private suspend fun responses(c: QuillClient, request: GenerateRequest): List<GenerateResponse> =
        c.generate(request).use { stream ->
            buildList {
                while (true) add(stream.next() ?: break)
            }
        }

    @Test
    fun `generate streams batches of 8, 8, 4 and only the last is complete`(server: QuillServer): Unit =
        runBlocking {
            client(server).use { c ->
                val rs = responses(c, greedy())
                assertEquals(listOf(8, 8, 4), rs.map { it.tokens.tokens.size })
                val tokens = rs.flatMap { it.tokens.tokens }
                assertEquals((0u until 20u).toList(), tokens.map { it.position })
                assertEquals(listOf(8u, 16u, 20u), rs.map { it.totalGenerated })
                assertEquals(listOf(false, false, true), rs.map { it.isComplete })
                assertEquals(listOf(null, null, "length"), rs.map { it.finishReason })
                assertTrue(rs.all { it.embedding == null })

                // Greedy decoding is deterministic, and text() joins the same batches.
                assertEquals(tokens, responses(c, greedy()).flatMap { it.tokens.tokens })
                val text = c.generate(greedy()).use { it.text() }
                assertTrue(text.isNotBlank())
                assertEquals(rs.joinToString("") { it.tokens.text() }, text)
            }
        }

    @Test
    fun `a stop token ends the generation with it included`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val ids = responses(c, greedy()).flatMap { it.tokens.tokenIds() }
            val stopId = ids[10]
            val expected = ids.indexOf(stopId) + 1
            val rs = responses(c, greedy(stop = listOf(stopId)))
            val got = rs.flatMap { it.tokens.tokenIds() }
            assertEquals(ids.take(expected), got)
            assertEquals(expected.toUInt(), rs.last().totalGenerated)
            assertEquals("stop", rs.last().finishReason)
            assertTrue(rs.last().isComplete && rs.dropLast(1).none { it.isComplete })
        }
    }

    @Test
    fun `streamEmbeddings attaches a float32 tensor of shape 1x8 to each response`(server: QuillServer): Unit =
        runBlocking {
            client(server).use { c ->
                val rs = c.generateFlow(greedy().copy(streamEmbeddings = true)).toList()
                assertEquals(3, rs.size)
                for (r in rs) {
                    val e = r.embedding ?: fail("a response without its embedding")
                    e.use {
                        assertArrayEquals(longArrayOf(1, 8), it.shapeLongs())
                        assertEquals(DType.FLOAT32, it.elementType)
                        assertTrue(it.toFloatArray().any { v -> v != 0f })
                    }
                }
            }
        }

    @Test
    fun `max_new_tokens over 4096 is a 400`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val e = assertThrows<QuillException.Status> {
                runBlocking { c.generate(greedy(maxNewTokens = 5000u)).close() }
            }
            assertEquals(400, e.problem.status.toInt())
            assertTrue(e.problem.body.contains("max_new_tokens"), e.problem.body)
            // The Flow extra surfaces the same error from collect.
            val viaFlow = assertThrows<QuillException.Status> {
                runBlocking { c.generateFlow(greedy(maxNewTokens = 5000u)).toList() }
            }
            assertEquals(400, viaFlow.problem.status.toInt())
        }
    }

    @Test
    fun `timing counts tokens and responses and orders its latencies`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val timings = mutableListOf<StreamTiming>()
            val rs = c.generateFlow(greedy(), onTiming = { timings += it }).toList()
            assertEquals(3, rs.size)
            assertEquals(1, timings.size)
            val t = timings.single()
            assertEquals(20uL, t.tokens)
            assertEquals(3uL, t.responses)
            val ttft = t.timeToFirstTokenMs ?: fail("no timeToFirstTokenMs")
            val elapsed = t.elapsedMs ?: fail("no elapsedMs")
            assertTrue(ttft > 0.0 && ttft <= elapsed, "ttft $ttft, elapsed $elapsed")
            val p50 = t.interTokenP50Ms ?: fail("no interTokenP50Ms")
            val p99 = t.interTokenP99Ms ?: fail("no interTokenP99Ms")
            assertTrue(p50 <= p99, "p50 $p50, p99 $p99")
            assertTrue((t.tokensPerSecond ?: fail("no tokensPerSecond")) > 0.0)

            // The generated object says the same; before any token there is no time.
            c.generate(greedy()).use { stream ->
                val before = stream.timing()
                assertEquals(0uL, before.tokens)
                assertNull(before.timeToFirstTokenMs)
                stream.text()
                assertEquals(20uL, stream.timing().tokens)
                assertEquals(3uL, stream.timing().responses)
            }

            // No final timing for a collection stopped early.
            c.generateFlow(greedy(), onTiming = { timings += it }).first()
            assertEquals(1, timings.size)
        }
    }

    @Test
    fun `generateBatches and generateText match the responses`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val rs = responses(c, greedy())
            val batches = c.generateBatches(greedy()).toList()
            assertEquals(rs.map { it.tokens }, batches)
            assertEquals(rs.joinToString("") { it.tokens.text() }, c.generateText(greedy()))
            assertEquals(
                batches.joinToString("") { it.text() },
                c.generate(greedy()).asFlow().toList().joinToString("") { it.tokens.text() },
            )
        }
    }

    @Test
    fun `embed returns a tensor per layer, pooled or not`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val layers = c.embed(EmbedRequest(inputIds = prompt, layers = listOf(-1, 2)))
            assertEquals(2, layers.size)
            for (t in layers) {
                assertArrayEquals(longArrayOf(3, 64), t.shapeLongs())
                assertEquals(DType.FLOAT32, t.elementType)
            }
            val (last, second) = layers.map { it.toFloatArray() }
            assertFalse(last.contentEquals(second), "layers -1 and 2 gave the same values")
            layers.forEach { it.close() }

            val rows = c.embed(EmbedRequest(inputIds = prompt)).single().use { it.toFloatArray() }
            val first = c.embed(EmbedRequest(inputIds = prompt, pool = true, poolStrategy = "first")).single()
            first.use {
                assertArrayEquals(longArrayOf(1, 64), it.shapeLongs())
                assertArrayEquals(rows.copyOfRange(0, 64), it.toFloatArray())
            }
            val mean = c.embed(EmbedRequest(inputIds = prompt, pool = true)).single()
            mean.use { assertArrayEquals(longArrayOf(1, 64), it.shapeLongs()) }

            val e = assertThrows<QuillException.Status> {
                runBlocking { c.embed(EmbedRequest(inputIds = prompt, pool = true, poolStrategy = "median")) }
            }
            assertEquals(400, e.problem.status.toInt())
            assertTrue(e.problem.body.contains("pool_strategy"), e.problem.body)
        }
    }

    @Test
    fun `chat runs one generation per request, in order`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val requests = flowOf(greedy(maxNewTokens = 10u), greedy(maxNewTokens = 12u).copy(inputIds = listOf(5u)))
            val rs = withTimeout(10_000) { c.chat(requests).toList() }
            val ids = rs.map { it.tokens.sequenceId }
            assertEquals(ids.sortedBy { it }, ids)
            assertEquals(setOf(1u, 2u), ids.toSet())
            for ((seq, count) in listOf(1u to 10, 2u to 12)) {
                val gen = rs.filter { it.tokens.sequenceId == seq }
                assertEquals(count, gen.sumOf { it.tokens.tokens.size })
                assertTrue(gen.last().isComplete && gen.dropLast(1).none { it.isComplete })
                assertEquals("length", gen.last().finishReason)
            }
            // A generation in a chat is the same as the same request on its own.
            assertEquals(
                responses(c, greedy(maxNewTokens = 10u)).flatMap { it.tokens.tokenIds() },
                rs.filter { it.tokens.sequenceId == 1u }.flatMap { it.tokens.tokenIds() },
            )
        }
    }

    @Test
    fun `chat answers each request while the next is still to come`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            // The second request is produced only after the first generation is complete.
            val firstDone = CompletableDeferred<Unit>()
            val requests = flow {
                emit(greedy(maxNewTokens = 4u))
                firstDone.await()
                emit(greedy(maxNewTokens = 4u))
            }
            val seqs = withTimeout(10_000) {
                c.chat(requests).map { r ->
                    if (r.isComplete && r.tokens.sequenceId == 1u) firstDone.complete(Unit)
                    r.tokens.sequenceId
                }.toList()
            }
            assertEquals(listOf(1u, 2u), seqs)
        }
    }

    @Test
    fun `stopping a generateFlow early cancels the stream on the server`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            // Earlier streams of this class may still be winding down on the server.
            awaitStats(c, 3_000, "no open stream") { stat(c, "open_streams") == 0L }
            val before = stat(c, "cancelled_streams")
            var timed = false
            val first = c.generateFlow(endless, pregenerate, onTiming = { timed = true }).first()
            assertEquals(64, first.tokens.tokens.size)
            assertFalse(first.isComplete)
            assertFalse(timed)
            val stopped = System.nanoTime()
            awaitStats(c, 3_000, "the stream cancelled") {
                stat(c, "open_streams") == 0L && stat(c, "cancelled_streams") >= before + 1
            }
            assertEquals(before + 1, stat(c, "cancelled_streams"))
            println("server saw the stopped generateFlow go after ${(System.nanoTime() - stopped) / 1_000_000} ms")
        }
    }

    @Test
    fun `stopping a GenerateStream flow early cancels and releases the stream`(server: QuillServer): Unit =
        runBlocking {
            client(server).use { c ->
                awaitStats(c, 3_000, "no open stream") { stat(c, "open_streams") == 0L }
                val before = stat(c, "cancelled_streams")
                // Held here, the stream stays reachable: only the flow's cancel and close,
                // not the cleaner after a GC, can end the call.
                val stream = c.generate(endless, pregenerate)
                assertEquals(64, stream.asFlow().first().tokens.tokens.size)
                awaitStats(c, 3_000, "the stream cancelled") {
                    stat(c, "open_streams") == 0L && stat(c, "cancelled_streams") >= before + 1
                }
                assertEquals(before + 1, stat(c, "cancelled_streams"))
                assertThrows<IllegalStateException> { stream.timing() } // the flow released it
            }
        }
}
