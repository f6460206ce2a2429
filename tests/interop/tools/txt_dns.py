#!/usr/bin/python3
"""A DNS server for tests that answers TXT queries from a file and nothing else.

Usage: txt_dns.py ADDR PORT RECORDS
RECORDS holds one record a line: `name. value` (the value as one string; split into
255-octet strings on the wire, RFC 1035 3.3.14). Any other name gets NXDOMAIN, any other
type an empty answer. UDP only; runs until killed. Standard library only.
"""
import socket
import struct
import sys


def read_records(path):
    records = {}
    with open(path) as f:
        for line in f:
            name, _, value = line.strip().partition(" ")
            if name:
                records[name.lower().rstrip(".")] = value
    return records


def parse_question(packet):
    labels, at = [], 12
    while packet[at] != 0:
        n = packet[at]
        labels.append(packet[at + 1 : at + 1 + n].decode("ascii", "replace"))
        at += 1 + n
    qtype, _ = struct.unpack("!HH", packet[at + 1 : at + 5])
    return ".".join(labels).lower(), qtype, packet[12 : at + 5]


def answer(packet, records):
    ident, flags = struct.unpack("!HH", packet[:4])
    name, qtype, question = parse_question(packet)
    value = records.get(name)
    rd = flags & 0x0100
    if value is None:
        header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | rd | 3, 1, 0, 0, 0)
        return header + question
    if qtype != 16:
        return struct.pack("!HHHHHH", ident, 0x8400 | rd, 1, 0, 0, 0) + question
    data = value.encode()
    strings = b"".join(
        bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255)
    )
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, len(strings)) + strings
    return struct.pack("!HHHHHH", ident, 0x8400 | rd, 1, 1, 0, 0) + question + rr


def main():
    addr, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    records = read_records(path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    while True:
        packet, peer = sock.recvfrom(4096)
        try:
            sock.sendto(answer(packet, records), peer)
        except (IndexError, struct.error):
            pass


if __name__ == "__main__":
    main()
