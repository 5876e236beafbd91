package dev.quill

import java.lang.management.ManagementFactory
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.consumeAsFlow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.flowOf
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.produceIn
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.extension.ExtendWith

/**
 * Bidirectional and client streaming from Flows, and cancellation of coroutines inside
 * calls, against the bundled server (its `Stats` route shows what the server saw).
 */
@ExtendWith(QuillServerExtension::class)
class StreamingTest {
    private val echo = "echo.v1.EchoService"
    private val fault = "test.v1.FaultService"

    private fun client(server: QuillServer) = QuillClient(server.baseUrl, 10_000u, false)

    private fun stat(c: QuillClient, key: String): Long = runBlocking {
        val json = c.callJson(fault, "Stats", "{}")
        Regex("\"$key\":(-?\\d+)").find(json)?.groupValues?.get(1)?.toLong() ?: error("no $key in $json")
    }

    /** Milliseconds until `stat(key)` reaches [target] (fails after [limitMs]). */
    private suspend fun msUntil(c: QuillClient, key: String, target: Long, limitMs: Long): Long {
        val start = System.nanoTime()
        while (stat(c, key) < target) {
            val ms = (System.nanoTime() - start) / 1_000_000
            assertTrue(ms < limitMs, "the server's $key did not reach $target within $limitMs ms")
            delay(2)
        }
        return (System.nanoTime() - start) / 1_000_000
    }

    @Test
    fun `bidiStream echoes every request message`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val sent = (0 until 20).map { "message $it".toByteArray() }
            val replies = c.bidiStream(echo, "BidiEcho", sent.asFlowOfArrays()).map { String(it) }.toList()
            assertEquals(sent.map { String(it) }, replies)
        }
    }

    @Test
    fun `bidiStream is full duplex`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val requests = Channel<ByteArray>()
            val replies = c.bidiStream(echo, "BidiEcho", requests.consumeAsFlow()).produceIn(this)
            // Each reply arrives before the next request is even produced.
            for (i in 0 until 5) {
                requests.send("ping $i".toByteArray())
                assertEquals("ping $i", String(withTimeout(5_000) { replies.receive() }))
            }
            requests.close()
            assertTrue(replies.receiveCatching().isClosed)
        }
    }

    @Test
    fun `stopping a bidi Flow early ends both directions`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            // An endless request flow: only the collector's stop can end this call.
            val endless = flow { var i = 0; while (true) { emit("m${i++}".toByteArray()); delay(5) } }
            val first = withTimeout(5_000) {
                c.bidiStream(echo, "BidiEcho", endless).take(3).map { String(it) }.toList()
            }
            assertEquals(listOf("m0", "m1", "m2"), first)
            assertEquals("after", String(c.call(echo, "Echo", "after".toByteArray(), false)))
        }
    }

    @Test
    fun `a server failure mid-stream ends the bidi Flow with a Stream error`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val received = mutableListOf<String>()
            val requests = flowOf("a", "b", "quill:server-cancel", "never echoed").map { it.toByteArray() }
            val e = assertThrows<QuillException.Stream> {
                runBlocking { c.bidiStream(echo, "BidiEcho", requests).collect { received += String(it) } }
            }
            assertEquals(listOf("a", "b"), received)
            assertTrue(e.reason.contains("CANCEL"), e.reason)
        }
    }

    @Test
    fun `clientStream sends a Flow and returns the reply`(server: QuillServer): Unit = runBlocking {
        client(server).use { c ->
            val reply = c.clientStream(echo, "ClientStream", flowOf("a", "bc", "").map { it.toByteArray() })
            assertEquals("""{"bytes":3,"count":3}""", String(reply))
        }
    }

    @Test
    fun `a failing request flow breaks the client stream off with its own error`(server: QuillServer): Unit =
        runBlocking {
            client(server).use { c ->
                val failing = flow {
                    emit("a".toByteArray())
                    throw IllegalStateException("the producer broke")
                }
                val e = assertThrows<IllegalStateException> {
                    runBlocking { c.clientStream(echo, "ClientStream", failing) }
                }
                assertEquals("the producer broke", e.message)
                // The call object is single-use; a second start is refused.
                val call = c.openClientStream(echo, "ClientStream")
                call.finish()
                assertEquals("""{"bytes":0,"count":0}""", String(call.response()))
                assertThrows<QuillException.InvalidArgument> { runBlocking { call.response() } }
                call.close()
            }
        }

    @Test
    fun `cancelling a coroutine inside a unary call ends the call on the server`(server: QuillServer): Unit =
        runBlocking {
            client(server).use { c ->
                val before = stat(c, "abandoned")
                val job = launch { c.callJson(fault, "Slow", """{"ms": 10000}""") }
                // Wait until the server holds the call.
                while (stat(c, "in_flight") < 1) delay(2)
                job.cancelAndJoin()
                val ms = msUntil(c, "abandoned", before + 1, limitMs = 100)
                println("server saw the cancelled unary call go after $ms ms")
            }
        }

    @Test
    fun `cancelling a coroutine inside a stream open ends it on the server`(server: QuillServer): Unit =
        runBlocking {
            client(server).use { c ->
                val before = stat(c, "abandoned")
                // Slow answers its headers only after 10 s: the open is what waits.
                val job = launch { c.serverStream(fault, "Slow", """{"ms": 10000}""".toByteArray(), true) }
                while (stat(c, "in_flight") < 1) delay(2)
                job.cancelAndJoin()
                msUntil(c, "abandoned", before + 1, limitMs = 100)
            }
        }

    @Test
    fun `cancelling a coroutine inside a stream read ends it on the server`(server: QuillServer): Unit =
        runBlocking {
            client(server).use { c ->
                val before = stat(c, "cancelled_streams")
                val stream = c.serverStream(
                    fault, "StreamSlow", """{"messages": 1000, "interval_ms": 30}""".toByteArray(), true,
                )
                val job = launch(start = CoroutineStart.UNDISPATCHED) { stream.asFlow().collect { } }
                delay(100)
                job.cancelAndJoin()
                // The server notices at its next write, at most 30 ms later.
                msUntil(c, "cancelled_streams", before + 1, limitMs = 100 + 30)
            }
        }

    @Test
    fun `many cancelled calls leave no thread, call or connection behind`(server: QuillServer): Unit = runBlocking {
        val cancels = System.getProperty("quill.cancels")?.toInt() ?: 1_000
        client(server).use { c ->
            val threads = ManagementFactory.getThreadMXBean()
            // Warm up: the runtime's worker threads exist before counting.
            c.call(echo, "Echo", ByteArray(1), false)
            val threadsBefore = threads.threadCount
            // Tasks of an idle client: its open connection and the pool's idle reaper.
            val tasksBefore = c.liveTasks()
            val abandonedBefore = stat(c, "abandoned")
            val start = System.nanoTime()
            repeat(cancels) {
                val job = launch(start = CoroutineStart.UNDISPATCHED) {
                    c.callJson(fault, "Slow", """{"ms": 10000}""")
                }
                // Half are cancelled at once, half once the request is likely out.
                if (it % 2 == 1) delay(1)
                job.cancelAndJoin()
            }
            val seconds = (System.nanoTime() - start) / 1e9
            // Nothing is still held by the server a moment later.
            val deadline = System.nanoTime() + 2_000_000_000L
            while (stat(c, "in_flight") > 0 && System.nanoTime() < deadline) delay(10)
            assertEquals(0L, stat(c, "in_flight"))
            val grown = threads.threadCount - threadsBefore
            assertTrue(grown <= 2, "$grown more JVM threads after $cancels cancels")
            val open = establishedTo(server.port)
            assertTrue(open <= 4, "$open connections still open after $cancels cancels")
            // No call task survives its cancel: the client's runtime is back to what an idle
            // client runs (one more if the Stats calls above left a second connection).
            val tasksDeadline = System.nanoTime() + 2_000_000_000L
            while (c.liveTasks() > tasksBefore + 1u && System.nanoTime() < tasksDeadline) delay(10)
            val tasks = c.liveTasks()
            assertTrue(tasks <= tasksBefore + 1u, "$tasks tasks alive after $cancels cancels ($tasksBefore before)")
            val reached = stat(c, "abandoned") - abandonedBefore
            println(
                ("$cancels cancelled calls in %.2f s ($reached reached the server); threads %+d; " +
                    "connections open $open; runtime tasks alive $tasks ($tasksBefore before)").format(seconds, grown),
            )
        }
    }
}

/** Client sockets ESTABLISHED to 127.0.0.1:[port], from `/proc/net/tcp`. */
fun establishedTo(port: Int): Int {
    val remote = "0100007F:%04X".format(port)
    return java.io.File("/proc/net/tcp").readLines().drop(1).count { line ->
        val cols = line.trim().split(Regex("\\s+"))
        cols.size > 3 && cols[2] == remote && cols[3] == "01"
    }
}

private fun List<ByteArray>.asFlowOfArrays() = flow { for (m in this@asFlowOfArrays) emit(m) }
