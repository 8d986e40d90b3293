"""Drives corecached's HTTP key API with Python's requests (Debian's python3-requests).

Usage: /usr/bin/python3 http_api_check.py http://HOST:PORT   (server run with --http-timeout 2)
Exits non-zero with a message on the first answer that differs from what README.md documents.
"""
import base64
import socket
import sys
import time
from urllib.parse import urlparse

import requests


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def main():
    base = sys.argv[1]
    s = requests.Session()

    # Round trips: text, binary (base64), flags.
    r = s.put(f"{base}/cache/py:text", json={"value": "grüße", "flags": 5})
    check("put status", r.status_code, 200)
    check("put body", r.json()["stored"], True)
    r = s.get(f"{base}/cache/py:text")
    check("get status", r.status_code, 200)
    j = r.json()
    check("get value", (j["value"], j["encoding"], j["flags"]), ("grüße", "utf-8", 5))
    raw = bytes(range(256))
    r = s.put(f"{base}/cache/py:bin",
              json={"value": base64.b64encode(raw).decode(), "encoding": "base64"})
    check("put binary", r.status_code, 200)
    j = s.get(f"{base}/cache/py:bin").json()
    check("binary encoding", j["encoding"], "base64")
    check("binary value", base64.b64decode(j["value"]), raw)

    # TTL.
    check("put ttl", s.put(f"{base}/cache/py:ttl", json={"value": "t", "ttl": 1}).status_code,
          200)
    ttl = s.get(f"{base}/cache/py:ttl").json()["ttl"]
    if not 0 <= ttl <= 1:
        sys.exit(f"ttl: got {ttl}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if s.get(f"{base}/cache/py:ttl").status_code == 404:
            break
        time.sleep(0.2)
    else:
        sys.exit("the 1-second item never expired")

    # Batch.
    for i in range(20):
        s.put(f"{base}/cache/py:b{i}", json={"value": str(i)})
    r = s.post(f"{base}/cache/batch", json={"keys": [f"py:b{i}" for i in range(25)]})
    check("batch status", r.status_code, 200)
    j = r.json()
    check("batch found", sorted(j["values"]), sorted(f"py:b{i}" for i in range(20)))
    check("batch missing", sorted(j["missing"]), sorted(f"py:b{i}" for i in range(20, 25)))
    check("batch value", j["values"]["py:b7"]["value"], "7")

    # Errors.
    r = s.get(f"{base}/cache/py:absent")
    check("404", (r.status_code, r.json()["error"]), (404, "not found"))
    r = s.put(f"{base}/cache/py:big", json={"value": "x" * (1024 * 1024 + 1)})
    check("oversize", r.status_code, 413)
    r = s.put(f"{base}/cache/py:bad", data=b"{not json", headers={"Content-Type": "application/json"})
    check("bad json", r.status_code, 400)
    check("bad json reason", "JSON" in r.json()["error"], True)
    r = s.put(f"{base}/cache/py:bad", json={"value": "%%%", "encoding": "base64"})
    check("bad base64", (r.status_code, r.json()["error"]), (400, "value is not valid base64"))

    # 10,000 requests over the session's kept-alive connection.
    for i in range(10_000):
        if i % 2 == 0:
            r = s.put(f"{base}/cache/py:ka{i % 50}", json={"value": i})
        else:
            r = s.get(f"{base}/cache/py:ka{(i - 1) % 50}")
            if r.status_code != 200 or r.json()["value"] != str(i - 1):
                sys.exit(f"keep-alive request {i}: {r.status_code} {r.text}")

    # A slow client: half a head, answered 408 after the server's --http-timeout.
    u = urlparse(base)
    with socket.create_connection((u.hostname, u.port), timeout=20) as sock:
        sock.sendall(b"GET /cache/py:text HTTP/1.1\r\nHost: x\r\n")
        # Others are served meanwhile.
        check("served beside a slow client", s.get(f"{base}/health").status_code, 200)
        got = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        check("slow client status", got.split(b"\r\n", 1)[0], b"HTTP/1.1 408 Request Timeout")

    print("all checks passed")


if __name__ == "__main__":
    main()
