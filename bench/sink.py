#!/usr/bin/env python3
"""A fast SMTP sink for benchmarks: PIPELINING, CHUNKING (BDAT) and DATA, no disk.

For every message accepted it appends one line to LOG, flushed at once:
    <reverse-path> TAB <marker> TAB <Message-ID header>
where the marker is the first line anywhere in the message that starts with
"Subject: m-" (a notice quotes its original's headers, so it carries the original's
marker), so a benchmark can count what arrived, and how often. RCPT TO an address starting with
"nobody" is refused with 550; everything else is accepted.

Usage: bench/sink.py PORT LOG
"""

import asyncio
import sys


def header(data: bytes, name: bytes) -> str:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":"):
            return line.decode("utf-8", "replace")
    return ""


def marker(data: bytes) -> str:
    at = data.find(b"Subject: m-")
    if at < 0:
        return ""
    return data[at:data.find(b"\r\n", at)].decode("utf-8", "replace")


class Session:
    def __init__(self, reader, writer, log):
        self.r, self.w, self.log = reader, writer, log
        self.sender, self.rcpts = "", []

    def record(self, data: bytes) -> bytes:
        if not self.rcpts:
            return b"554 5.5.1 no valid recipients\r\n"
        self.log.write(f"{self.sender}\t{marker(data)}\t{header(data, b'Message-ID')}\n")
        self.log.flush()
        return b"250 2.0.0 ok\r\n"

    async def run(self):
        self.w.write(b"220 sink.bench.example ESMTP\r\n")
        while True:
            line = await self.r.readline()
            if not line:
                return
            cmd = line.rstrip(b"\r\n")
            up = cmd.upper()
            if up.startswith(b"EHLO") or up.startswith(b"HELO"):
                out = b"250-sink.bench.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"
            elif up.startswith(b"MAIL FROM:"):
                self.sender = cmd[10:].split(b">")[0].lstrip(b" <").decode()
                self.rcpts = []
                out = b"250 2.1.0 ok\r\n"
            elif up.startswith(b"RCPT TO:"):
                rcpt = cmd[8:].split(b">")[0].lstrip(b" <").decode()
                if rcpt.startswith("nobody"):
                    out = b"550 5.1.1 no such user\r\n"
                else:
                    self.rcpts.append(rcpt)
                    out = b"250 2.1.5 ok\r\n"
            elif up == b"DATA":
                self.w.write(b"354 go ahead\r\n")
                await self.w.drain()
                data = bytearray()
                while True:
                    l = await self.r.readline()
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b"..") else l
                out = self.record(bytes(data))
            elif up.startswith(b"BDAT "):
                n = int(up.split()[1])
                data = await self.r.readexactly(n)
                out = self.record(data) if up.endswith(b"LAST") else b"250 2.0.0 chunk\r\n"
            elif up == b"QUIT":
                self.w.write(b"221 bye\r\n")
                await self.w.drain()
                return
            else:
                out = b"250 2.0.0 ok\r\n"
            self.w.write(out)
            # Replies to pipelined commands go out together, when nothing more is waiting.
            if not self.r._buffer:
                await self.w.drain()


async def main(port: int, path: str):
    log = open(path, "a", buffering=1)

    async def serve(reader, writer):
        try:
            await Session(reader, writer, log).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
