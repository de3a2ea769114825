#!/usr/bin/env python3
"""An unreliable network in front of RabbitMQ, for the chaos harness.

    scripts/flaky_proxy.py --listen 5673 --target 5672 --drop-per-minute 2 --latency-ms 50

Forwards 127.0.0.1:LISTEN to 127.0.0.1:TARGET. While it is unruly it adds a random
delay (0..latency-ms) to each chunk it forwards and cuts each connection at random
(about drop-per-minute times a minute per connection: both sides see a reset).
SIGUSR1 calms it (plain forwarding), SIGUSR2 makes it unruly again; SIGTERM stops it.
Counts of connections and drops go to the file named by --stats (JSON), every second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
from pathlib import Path


class Proxy:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.unruly = not args.start_calm
        self.connections = 0
        self.drops = 0
        self.live: set[asyncio.Task] = set()

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.unruly and self.args.latency_ms:
                    await asyncio.sleep(random.uniform(0, self.args.latency_ms) / 1000)  # noqa: S311
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def saboteur(self, writers: list[asyncio.StreamWriter]) -> None:
        """Cut the connection at random moments while unruly."""
        rate = self.args.drop_per_minute / 60.0
        while True:
            await asyncio.sleep(1.0)
            if self.unruly and rate and random.random() < rate:  # noqa: S311
                self.drops += 1
                for writer in writers:
                    transport = writer.transport
                    if transport is not None:
                        transport.abort()
                return

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.args.target)
        except OSError:
            client_writer.close()
            return
        writers = [client_writer, upstream_writer]
        tasks = [
            asyncio.create_task(self.pipe(client_reader, upstream_writer)),
            asyncio.create_task(self.pipe(upstream_reader, client_writer)),
        ]
        sabotage = asyncio.create_task(self.saboteur(writers))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        sabotage.cancel()
        for writer in writers:
            writer.close()
        for task in tasks:
            task.cancel()

    async def report(self) -> None:
        while True:
            if self.args.stats:
                Path(self.args.stats).write_text(
                    json.dumps({"connections": self.connections, "drops": self.drops, "unruly": self.unruly})
                )
            await asyncio.sleep(1.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(self, "unruly", False))
        loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(self, "unruly", True))
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        server = await asyncio.start_server(self.handle, "127.0.0.1", self.args.listen)
        reporter = asyncio.create_task(self.report())
        async with server:
            await stop.wait()
        reporter.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, default=5673)
    parser.add_argument("--target", type=int, default=5672)
    parser.add_argument("--drop-per-minute", type=float, default=2.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--stats", default="")
    parser.add_argument("--start-calm", action="store_true", help="forward plainly until SIGUSR2")
    asyncio.run(Proxy(parser.parse_args()).run())


if __name__ == "__main__":
    main()
