#!/usr/bin/env python3
"""An emulated long thin link for the benchmarks: a TCP relay that serialises each
direction at the link's bandwidth, shared by all connections through it, and delivers
every chunk after the one-way delay (netem is not in this kernel). Whatever connects to --listen reaches --upstream through
it. On SIGTERM it writes its figures as JSON to --stats: bytes each way, connections,
and the wall time (time.time()) of the first byte that went from client to server.

Usage: link_relay.py --listen 127.0.0.1:P --upstream 127.0.0.1:Q --delay-ms 300
                     --kbit 1000 --stats FILE
"""
import argparse
import asyncio
import json
import signal
import time

stats = {"connections": 0, "bytes_up": 0, "bytes_down": 0, "first_up_at": None, "last_down_at": None}
# When each direction of the link is next free: every connection shares the link, as
# parallel connections share a real one.
link_free = {True: 0.0, False: 0.0}


async def pipe(reader, writer, delay, rate, up):
    """One direction: serialise at `rate` bytes/s, then deliver `delay` later."""
    queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def deliver():
        while True:
            arrival, data = await queue.get()
            if data is None:
                break
            wait = arrival - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            if not up:
                stats["last_down_at"] = time.time()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(1460)
            if not data:
                break
            now = loop.time()
            if up:
                stats["bytes_up"] += len(data)
                if stats["first_up_at"] is None:
                    stats["first_up_at"] = time.time()
            else:
                stats["bytes_down"] += len(data)
            departure = max(now, link_free[up]) + len(data) / rate
            link_free[up] = departure
            await queue.put((departure + delay, data))
    except ConnectionError:
        pass
    await queue.put((0, None))
    await sender


async def serve(args):
    host, port = args.upstream.rsplit(":", 1)
    delay, rate = args.delay_ms / 1000.0, args.kbit * 1000 / 8.0

    async def handle(client_r, client_w):
        stats["connections"] += 1
        try:
            up_r, up_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        # The TCP handshake crosses the link too: one round trip before anything flows.
        await asyncio.sleep(2 * delay)
        await asyncio.gather(
            pipe(client_r, up_w, delay, rate, True),
            pipe(up_r, client_w, delay, rate, False),
        )

    lhost, lport = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, lhost, int(lport))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Connections still open at the end are cut; that is not worth a traceback.
    loop.set_exception_handler(lambda loop, context: None)
    async with server:
        await stop.wait()
    with open(args.stats, "w") as f:
        json.dump(stats, f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--delay-ms", type=float, default=300)
    p.add_argument("--kbit", type=float, default=1000)
    p.add_argument("--stats", required=True)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
