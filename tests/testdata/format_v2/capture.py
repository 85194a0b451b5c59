#!/usr/bin/python3
"""Writes the entries of tests/testdata/format_v2/ with the `chunkcache` tool of a release that
writes format version 2 (the release before format version 3), over a redis-server of its own.

    tests/testdata/format_v2/capture.py OLD_CHUNKCACHE OLD_GEN_CATALOGUE [CORPUS_DIR]

OLD_CHUNKCACHE is that release's tool (its build dir's `chunkcache`), OLD_GEN_CATALOGUE its
catalogue generator, CORPUS_DIR ../shared/corpus (default: /work/shared/corpus). For each entry
it runs `chunkcache --backend=redis://... [--prefix=P] [--chunk_size=C] put KEY FILE`, then reads
every key the put stored byte for byte (a raw RESP client: no text decoding on the way) and writes
NAME.entry.json: the logical key and prefix, the expected JSON's size and XXH3-64 (and where it
comes from), and every stored item, its key and its value in base64. Small expected documents
are written as NAME.expected.json; the corpus files and the generated catalogue are not (too
large to commit): tests/format_compat_test.cc compares against ../shared/corpus when present
and regenerates the catalogue (tools/catalogue.h, deterministic).
"""
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import xxhash

HERE = os.path.dirname(os.path.abspath(__file__))

SMALL_INLINE = ('{"id":42,"title":"\u6771\u4eac night \u00e9t\u00e9 \U0001f3ac","tags":["a","b"],'
                '"free":true,"rating":4.5,"next":null}')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Resp:
    """A minimal binary-safe RESP2 client."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("redis closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    tool, gen = sys.argv[1], sys.argv[2]
    corpus = sys.argv[3] if len(sys.argv) == 4 else "/work/shared/corpus"
    port = free_port()
    work = tempfile.mkdtemp(prefix="format_v2.")
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", work],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                redis = Resp(port)
                redis.call("PING")
                break
            except OSError:
                time.sleep(0.05)

        def write(name, data):
            path = os.path.join(work, name)
            with open(path, "wb") as f:
                f.write(data)
            return path

        catalogue_small = write("catalogue_small.json", subprocess.run(
            [gen, "--mb", "0.003"], check=True, capture_output=True).stdout)
        catalogue_300k = write("catalogue_300k.json", subprocess.run(
            [gen, "--mb", "0.29"], check=True, capture_output=True).stdout)
        # name, prefix, logical key, file, --chunk_size, where the expected JSON comes from
        entries = [
            ("inline_doc", "cc:", b"doc", write("inline.json", SMALL_INLINE.encode()), None,
             "committed"),
            ("odd_key", "app:{v2}", "a b{c}/\u6771\u4eac%".encode(),
             write("odd.json", b'[1,"two",{"three":[3.0e0]}]'), None, "committed"),
            ("small_chunked", "cc:", b"small", catalogue_small, 256, "committed"),
            ("citm_catalog", "cc:", b"citm", os.path.join(corpus, "citm_catalog.json"), None,
             "corpus:citm_catalog.json"),
            ("twitter", "cc:", b"twitter", os.path.join(corpus, "twitter.json"), 16384,
             "corpus:twitter.json"),
            ("catalogue_300k", "cc:", b"catalogue", catalogue_300k, 4096,
             "catalogue:0.29"),
        ]
        for name, prefix, key, path, chunk_size, source in entries:
            redis.call("FLUSHALL")
            args = [tool, "--backend=redis://127.0.0.1:%d" % port, "--prefix=" + prefix]
            if chunk_size:
                args.append("--chunk_size=%d" % chunk_size)
            subprocess.run(args + ["put", key, path], check=True)
            subprocess.run(args + ["verify", key], check=True, stdout=subprocess.DEVNULL)
            with open(path, "rb") as f:
                expected = f.read()
            items = []
            for stored_key in sorted(redis.call("KEYS", "*")):
                value = redis.call("GET", stored_key)
                items.append({"key": stored_key.decode("ascii"),
                              "value": base64.b64encode(value).decode("ascii")})
            manifest = [i for i in items if i["key"].endswith("}")]  # chunk keys end ":i"
            entry = {
                "written_by": "chunkcache tool of the release writing format version 2 ("
                              + "commit 4a20343), put over redis, read back byte for byte",
                "key_prefix": prefix,
                "key_base64": base64.b64encode(key).decode("ascii"),
                "chunk_size": chunk_size or (1 << 20),
                "expected_size": len(expected),
                "expected_xxh3": "%016x" % xxhash.xxh3_64_intdigest(expected),
                "expected_source": source,
                "items": items,
            }
            assert len(manifest) == 1, manifest
            with open(os.path.join(HERE, name + ".entry.json"), "w") as f:
                json.dump(entry, f, indent=1)
                f.write("\n")
            if source == "committed":
                with open(os.path.join(HERE, name + ".expected.json"), "wb") as f:
                    f.write(expected)
            print("%s: %d items, %d bytes of JSON" % (name, len(items), len(expected)))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
