#!/usr/bin/env python3
"""A tiny keep-alive HTTP/1.1 client for tests/bench/callgrind.sh: sends N
GET requests one after the other on one connection and checks each answer
is 200 with a Content-Length body. Standard library only.

  cgclient.py PORT N PATH [PATH...]   (paths are cycled)
"""
import socket
import sys


def main():
    port, n, paths = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    buf = b""
    for i in range(n):
        path = paths[i % len(paths)]
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: cgclient\r\n"
                  f"Accept: */*\r\n\r\n".encode())
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(f"cgclient: connection closed after {i} responses")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200"):
            sys.exit(f"cgclient: {path}: {lines[0].decode(errors='replace')}")
        clen = 0
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                clen = int(v)
        while len(buf) < clen:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("cgclient: connection closed in a body")
            buf += chunk
        buf = buf[clen:]
    s.close()


if __name__ == "__main__":
    main()
