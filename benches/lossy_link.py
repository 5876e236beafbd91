"""A lossy, slow link in user space, for benches/bench_http3.py: this machine's kernel
has no `sch_netem`, so `tc netem` cannot add loss and delay to loopback.

Two relays run in a child process (so their work never shares the benchmark's GIL),
both on 127.0.0.1, in front of one server port:

- UDP (for QUIC): every datagram is delayed by half the RTT in each direction, and
  dropped with probability LOSS. This is what netem does to a packet, and QUIC recovers
  each lost packet on its own stream only.
- TCP (for HTTP/2): the relay cannot drop a segment (the kernels on both sides would
  resend it at once), so it emulates the *effect* of a loss on TCP: the byte stream is
  cut into segment-sized pieces (1,448 bytes), each delayed by half the RTT, and a piece
  "lost" with probability LOSS holds back itself and everything after it for one more
  RTT (a fast retransmit), in order. That stall of every stream on the connection is the
  head-of-line blocking HTTP/3 avoids; real TCP can do worse (a retransmission timeout
  is at least 200 ms on Linux), so this errs in TCP's favour.
"""

from __future__ import annotations

import asyncio
import heapq
import multiprocessing
import random
import time
from multiprocessing.connection import Connection
from typing import cast

SEGMENT = 1448


class _UdpSide(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, upstream: bool) -> None:
        self.relay, self.upstream = relay, upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport does not subclass the public class it implements.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.received(data, addr, self.upstream)


class UdpRelay:
    """Client ⇄ relay ⇄ server, one client address at a time (one QUIC client)."""

    def __init__(self, server_port: int, delay: float, loss: float, rng: random.Random):
        self.server = ("127.0.0.1", server_port)
        self.delay, self.loss, self.rng = delay, loss, rng
        self.client: tuple[str, int] | None = None
        self.front: _UdpSide | None = None
        self.back: _UdpSide | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        _, self.front = await loop.create_datagram_endpoint(
            lambda: _UdpSide(self, upstream=False), local_addr=("127.0.0.1", 0)
        )
        _, self.back = await loop.create_datagram_endpoint(
            lambda: _UdpSide(self, upstream=True), remote_addr=self.server
        )
        assert self.front.transport is not None
        return int(self.front.transport.get_extra_info("sockname")[1])

    def received(self, data: bytes, addr: tuple[str, int], upstream: bool) -> None:
        if self.rng.random() < self.loss:
            return
        loop = asyncio.get_running_loop()
        if upstream:  # server → client
            if self.client is not None and self.front and self.front.transport:
                loop.call_later(self.delay, self.front.transport.sendto, data, self.client)
        else:  # client → server
            self.client = addr
            if self.back and self.back.transport:
                loop.call_later(self.delay, self.back.transport.sendto, data)


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    rtt: float,
    loss: float,
    rng: random.Random,
) -> None:
    """Forwards segments in order, each at max(arrival + delay (+ one RTT if "lost"),
    the previous segment's time)."""
    queue: list[tuple[float, int, bytes]] = []
    ready = asyncio.Event()
    done = False
    seq = 0

    async def send() -> None:
        while True:
            while not queue:
                if done:
                    writer.close()
                    return
                ready.clear()
                await ready.wait()
            at, _, data = queue[0]
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            heapq.heappop(queue)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    last = 0.0
    try:
        while data := await reader.read(SEGMENT):
            at = time.monotonic() + delay + (rtt if rng.random() < loss else 0.0)
            last = max(last, at)
            heapq.heappush(queue, (last, seq, data))
            seq += 1
            ready.set()
    finally:
        done = True
        ready.set()
        await sender


async def _tcp_relay(server_port: int, delay: float, loss: float, rng: random.Random) -> int:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", server_port)
        await asyncio.gather(
            _pipe(client_r, server_w, delay, 2 * delay, loss, rng),
            _pipe(server_r, client_w, delay, 2 * delay, loss, rng),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return int(server.sockets[0].getsockname()[1])


def _serve(server_port: int, rtt: float, loss: float, conn: Connection) -> None:
    async def main() -> None:
        rng = random.Random(7)
        udp = await UdpRelay(server_port, rtt / 2, loss, rng).start()
        tcp = await _tcp_relay(server_port, rtt / 2, loss, rng)
        conn.send((tcp, udp))
        await asyncio.Event().wait()

    asyncio.run(main())


class LossyLink:
    """The two relays in a child process: `tcp_port` and `udp_port` lead to the server."""

    def __init__(self, server_port: int, rtt: float, loss: float) -> None:
        parent, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(
            target=_serve, args=(server_port, rtt, loss, child), daemon=True
        )
        self.process.start()
        if not parent.poll(10):
            self.close()
            raise RuntimeError("the lossy link did not start")
        self.tcp_port, self.udp_port = parent.recv()

    def close(self) -> None:
        self.process.terminate()
        self.process.join(5)
