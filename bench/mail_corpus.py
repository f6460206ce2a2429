#!/usr/bin/python3
"""A deterministic corpus of typical mail for the benchmarks: plain-text notes and
replies that quote earlier mail, HTML newsletters, and messages with base64
attachments of already-compressed data (random bytes, as a JPEG or a zip is). About
70 % of the bytes are text and 30 % attachments. The same N and seed give the same
files, byte for byte.

Usage: mail_corpus.py DIR N [SEED]   writes DIR/000000.eml …, one message each (CRLF),
                                     and prints: messages, bytes, attachment bytes
"""
import base64
import os
import random
import sys

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "if so no will can more about up out them some could into time only its other then "
    "field station supply water radio route camp survey report weather team fuel road "
    "bridge medical schedule arrival departure convoy signal battery generator antenna "
    "sample data upload backup window storm river village clinic school repair spare "
    "parts order invoice budget meeting tomorrow yesterday week morning evening please "
    "thanks regards confirm update status delayed arrived received sent attached "
    "following request approval contact number address coordinates north south east west"
).split()
NAMES = ["amina", "bruno", "chen", "dara", "emeka", "farah", "goran", "hana", "ivan",
         "jo", "kofi", "lena", "mateo", "nadia", "omar", "priya", "quinn", "rosa"]
DOMAINS = ["field.example.org", "hub.example.org", "ngo.example.net", "supply.example.com",
           "univ.example.edu"]


def sentence(rng):
    n = rng.randint(6, 18)
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def paragraph(rng):
    text = " ".join(sentence(rng) for _ in range(rng.randint(2, 6)))
    lines, line = [], ""
    for w in text.split():
        if len(line) + len(w) + 1 > 72:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return lines


def address(rng):
    return f"{rng.choice(NAMES)}@{rng.choice(DOMAINS)}"


def headers(rng, i, subject, extra):
    return [
        f"From: {address(rng)}",
        f"To: {address(rng)}",
        f"Subject: {subject}",
        f"Date: Mon, {1 + i % 28} Nov 2026 {i % 24:02d}:{i % 60:02d}:00 +0000",
        f"Message-ID: <{i}.{rng.getrandbits(48):x}@{rng.choice(DOMAINS)}>",
        "MIME-Version: 1.0",
    ] + extra


def plain(rng, i, earlier):
    body = []
    for _ in range(rng.randint(2, 8)):
        body += paragraph(rng) + [""]
    if earlier and rng.random() < 0.6:
        body += [f"On Sun, someone wrote:"] + ["> " + l for l in rng.choice(earlier)]
    earlier.append(body[:40])
    del earlier[:-50]
    return headers(rng, i, f"Re: {sentence(rng)[:40]}",
                   ["Content-Type: text/plain; charset=utf-8"]) + [""] + body


def html(rng, i):
    parts = ["<html><head><style>p { font-family: sans-serif; margin: 0 0 1em }</style></head><body>"]
    for _ in range(rng.randint(4, 14)):
        parts.append(f'<h2 style="color:#336">{sentence(rng)}</h2>')
        parts.append("<p>" + " ".join(paragraph(rng)) + "</p>")
        parts.append(f'<p><a href="https://{rng.choice(DOMAINS)}/news/{rng.randint(1, 9999)}">read more</a></p>')
    parts.append("</body></html>")
    body, line = [], ""
    for chunk in "".join(parts).split(" "):
        if len(line) + len(chunk) > 76:
            body.append(line)
            line = chunk
        else:
            line = f"{line} {chunk}" if line else chunk
    body.append(line)
    return headers(rng, i, f"Newsletter: {sentence(rng)[:40]}",
                   ["Content-Type: text/html; charset=utf-8"]) + [""] + body


def attached(rng, i):
    boundary = f"b{rng.getrandbits(64):x}"
    data = rng.randbytes(rng.randint(8, 32) * 1024)
    b64 = base64.encodebytes(data).decode().split("\n")
    text = []
    for _ in range(rng.randint(1, 3)):
        text += paragraph(rng) + [""]
    lines = headers(rng, i, f"Photos: {sentence(rng)[:40]}",
                    [f'Content-Type: multipart/mixed; boundary="{boundary}"']) + [
        "", f"--{boundary}", "Content-Type: text/plain; charset=utf-8", ""] + text + [
        f"--{boundary}", "Content-Type: image/jpeg", "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="site-{i}.jpg"', ""] + [
        l for l in b64 if l] + [f"--{boundary}--"]
    return lines, len(data) * 4 // 3


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 14)
    os.makedirs(out, exist_ok=True)
    earlier, total, attachment = [], 0, 0
    for i in range(n):
        kind = rng.random()
        if kind < 0.05:
            lines, a = attached(rng, i)
            attachment += a
        elif kind < 0.30:
            lines = html(rng, i)
        else:
            lines = plain(rng, i, earlier)
        data = ("\r\n".join(lines) + "\r\n").encode()
        total += len(data)
        with open(os.path.join(out, f"{i:06d}.eml"), "wb") as f:
            f.write(data)
    print(n, total, attachment)


main()
