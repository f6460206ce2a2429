#!/usr/bin/python3
"""An SMTP sink for tests that keeps each message exactly as it came (CRLF lines, dot
stuffing undone) in DIR/N.eml, with the envelope sender in DIR/N.from.

Usage: raw_sink.py ADDR PORT DIR [REFUSE]
Accepts every MAIL, and every RCPT but those starting with REFUSE (550 5.1.1); answers EHLO with 8BITMIME and PIPELINING (DATA, no CHUNKING).
Runs until killed. Standard library only.
"""
import os
import socketserver
import sys

COUNT = [0]


class Session(socketserver.StreamRequestHandler):
    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        self.reply("220 sink.test ESMTP")
        sender = ""
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.reply("250-sink.test\r\n250-8BITMIME\r\n250 PIPELINING")
            elif verb == b"MAIL":
                sender = line.split(b":", 1)[1].strip().strip(b"<>").split(b">")[0].decode()
                self.reply("250 2.1.0 ok")
            elif verb == b"RCPT":
                refuse = sys.argv[4].encode() if len(sys.argv) > 4 else None
                address = line.split(b":", 1)[1].strip().strip(b"<>").split(b">")[0]
                if refuse and address.startswith(refuse):
                    self.reply("550 5.1.1 no such user")
                else:
                    with open(os.path.join(sys.argv[3], "rcpts"), "ab") as f:
                        f.write(address + b"\n")
                    self.reply("250 2.1.5 ok")
            elif verb == b"DATA":
                self.reply("354 go on")
                data = bytearray()
                while True:
                    l = self.rfile.readline()
                    if not l or l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b".") else l
                COUNT[0] += 1
                base = os.path.join(sys.argv[3], str(COUNT[0]))
                with open(base + ".eml.tmp", "wb") as f:
                    f.write(data)
                with open(base + ".from", "w") as f:
                    f.write(sender)
                os.rename(base + ".eml.tmp", base + ".eml")
                self.reply("250 2.0.0 kept")
            elif verb == b"QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    Server((sys.argv[1], int(sys.argv[2])), Session).serve_forever()
