#!/usr/bin/python3
"""docs/FORMAT.md is complete: a reader and writer written from it alone (chunkcache_format.py)
interoperate both ways with the `chunkcache` tool, over a redis-server of its own.

usage: interop_test.py [--cli PATH] [--gen_catalogue PATH] [--shared_dir DIR] [--only SUBSTRING]

Without --cli only the Python-to-Python cases run. --gen_catalogue is the project's catalogue
generator (the 10 MB reference catalogue); --shared_dir holds corpus/*.json (the cases that use
it are skipped when it is absent). Exits 0 when every case passes, 1 when one fails, 77 (skip)
when redis-server, python3-xxhash or python3-zstandard is missing.
"""

import argparse
import io
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
FORMAT_MD = os.path.join(HERE, "..", "..", "docs", "FORMAT.md")

try:
    sys.path.insert(0, HERE)
    import chunkcache_format as fmt
    import zstandard
except ImportError as e:
    print("SKIP: %s (install python3-xxhash and python3-zstandard)" % e)
    sys.exit(SKIP)

EXIT_CORRUPT, EXIT_NOT_FOUND = 2, 3


# ---------------------------------------------------------------------------------------------
# Backends: a tiny RESP client for redis-server, and a dict.


class RedisError(Exception):
    pass


class Redis:
    """Just enough of RESP 2 for the cases: one connection, one command at a time."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    def close(self):
        self.file.close()
        self.sock.close()

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError("unexpected reply %r" % line)

    # The backend interface of chunkcache_format.
    def mget(self, keys):
        return self.call(b"MGET", *keys)

    def set(self, key, value, ttl_ms):
        self.call(b"SET", key, value, b"PX", ttl_ms)

    def delete(self, keys):
        if keys:
            self.call(b"DEL", *keys)


class RedisServer:
    """redis-server on a free loopback port, without persistence; stopped by stop()."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="pyfmt-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir], stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                r = Redis(self.port)
                r.call(b"PING")
                self.client = r
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start on port %d" % self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class DictBackend:
    """An in-process backend; calls counts the mget calls and their keys."""

    def __init__(self):
        self.items, self.calls = {}, []

    def mget(self, keys):
        self.calls.append(list(keys))
        return [self.items.get(k) for k in keys]

    def set(self, key, value, ttl_ms):
        self.items[key] = bytes(value)

    def delete(self, keys):
        for k in keys:
            self.items.pop(k, None)


# ---------------------------------------------------------------------------------------------
# Test data.


def small_json(rng, approx_bytes, non_ascii=True):
    """Deterministic JSON of about approx_bytes, with Japanese text when non_ascii."""
    words = ["catalogue", "episode", "北海道", "温泉", "旅行", "special", "{braces}", "é"]
    if not non_ascii:
        words = words[:2] + words[5:7]
    items, size = [], 0
    while size < approx_bytes:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        items.append('{"id":%d,"title":"%s","n":%d}' % (len(items), text, rng.randint(0, 9999)))
        size += len(items[-1].encode()) + 1
    return ('{"items":[%s]}' % ",".join(items)).encode()


def set_declared_content_size(frame: bytes, value: int) -> bytes:
    """The zstd frame with another Frame_Content_Size (RFC 8878 3.1.1.1)."""
    descriptor = frame[4]
    fcs_flag, single, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    at = 5 + (0 if single else 1) + [0, 1, 2, 4][dict_flag]
    size = [1 if single else 0, 2, 4, 8][fcs_flag]
    if size == 0:
        raise ValueError("the frame declares no content size")
    stored = value - 256 if size == 2 else value
    return frame[:at] + stored.to_bytes(size, "little") + frame[at + size:]


def pack_manifest_v1_v2(version, base, *, generation, raw, payload, chunk_size, chunk_count,
                        created_ms=1_700_000_000_000):
    """A version-1 or -2 manifest (what earlier releases wrote), for the reader's cases."""
    header = (b"CCMF" + bytes([version, 1, 1 if chunk_count == 0 else 0, 0]) +
              generation.to_bytes(8, "little") + raw.to_bytes(8, "little") +
              len(payload).to_bytes(8, "little") + chunk_size.to_bytes(4, "little") +
              chunk_count.to_bytes(4, "little") + fmt.xxh3(payload).to_bytes(8, "little") +
              created_ms.to_bytes(8, "little", signed=True))
    if version == 2:
        header += fmt.xxh3(base).to_bytes(8, "little")
    header += fmt.xxh3(header).to_bytes(8, "little")
    return header + (payload if chunk_count == 0 else b"")


def entry_v1_v2(version, prefix, key, data, chunk_size):
    base = fmt.manifest_key(prefix, key)
    payload = zstandard.ZstdCompressor(level=3).compress(data)
    generation = random.getrandbits(64)
    if fmt.HEADER_SIZE[version] + len(payload) <= chunk_size:
        return {base: pack_manifest_v1_v2(version, base, generation=generation, raw=len(data),
                                          payload=payload, chunk_size=chunk_size, chunk_count=0)}
    chunks = [payload[at:at + chunk_size] for at in range(0, len(payload), chunk_size)]
    items = {fmt.chunk_key(base, generation, i): c for i, c in enumerate(chunks)}
    items[base] = pack_manifest_v1_v2(version, base, generation=generation, raw=len(data),
                                      payload=payload, chunk_size=chunk_size,
                                      chunk_count=len(chunks))
    return items


# ---------------------------------------------------------------------------------------------
# Hostile entries: each breaks one rule of "Reading" while every other check still passes
# (checksums recomputed), so a reader refuses it for that rule.


def hostile_entries(prefix, key, data, frame_size, chunk_size):
    """(name, items) pairs: the items (key -> bytes) of one corrupt entry under prefix/key."""
    rng = random.Random(7)
    frames = fmt.compress_frames(data, frame_size)
    raw = len(data)
    assert len(frames) >= 3, "the hostile cases need at least 3 frames"

    def build(frames_, raw_=raw, frame_size_=frame_size, **overrides):
        generation = rng.getrandbits(64)
        base, manifest, chunks = fmt.encode_frames(
            prefix, key, raw_, frame_size_, frames_, chunk_size=chunk_size, generation=generation,
            created_ms=1_700_000_000_000)
        if overrides:  # rebuild the manifest with some fields changed, checksums recomputed
            fields = dict(generation=generation, raw_size=raw_, frame_size=frame_size_,
                          frames=[(len(f), fmt.xxh3(f)) for f in frames_],
                          chunk_size=chunk_size, chunk_count=len(chunks),
                          created_ms=1_700_000_000_000,
                          inline=b"" if chunks else b"".join(frames_))
            fields.update(overrides)
            manifest = fmt.pack_manifest_v3(base, **fields)
        items = dict(chunks)
        items[base] = manifest
        return base, items

    base, good = build(frames)
    assert len(good) > 2, "the hostile cases need a chunked entry"
    cases = []

    items = dict(good)
    k = fmt.chunk_key(base, int.from_bytes(good[base][8:16], "little"), 1)
    items[k] = items[k][:5] + bytes([items[k][5] ^ 0x40]) + items[k][6:]
    cases.append(("a flipped byte in a frame", items))

    cases.append(("a wrong table checksum",
                  build(frames, table_checksum=fmt.xxh3(b"another table"))[1]))
    sizes = [(len(f), fmt.xxh3(f)) for f in frames]
    cases.append(("frame sizes adding up to more than the stored size",
                  build(frames, frames=sizes[:-1] + [(sizes[-1][0] + 1, sizes[-1][1])],
                        stored_size=sum(s for s, _ in sizes))[1]))
    cases.append(("frame sizes adding up to less than the stored size",
                  build(frames, stored_size=sum(s for s, _ in sizes) + 1)[1]))
    cases.append(("frame count one more than ceil(raw / F)",
                  build(frames, frame_count=len(frames) + 1)[1]))
    cases.append(("frame count one less than ceil(raw / F)",
                  build(frames, frame_count=len(frames) - 1)[1]))
    cases.append(("F doubled, so that ceil(raw / F) is not the frame count",
                  build(frames, frame_size=frame_size * 2)[1]))
    cases.append(("F zero", build(frames, frame_size=0)[1]))
    cases.append(("a frame table that does not fit (F = 1)",
                  build(frames, frame_size=1, frame_count=raw)[1]))
    cases.append(("a frame of compressed size 0",
                  build(frames, frames=[(0, fmt.xxh3(b""))] + sizes[1:],
                        stored_size=sum(s for s, _ in sizes))[1]))

    wrong = [set_declared_content_size(frames[0], frame_size + 1)] + frames[1:]
    cases.append(("a frame whose declared content size is one too many", build(wrong)[1]))
    wrong = [set_declared_content_size(frames[0], frame_size - 1)] + frames[1:]
    cases.append(("a frame whose declared content size is one too few", build(wrong)[1]))
    no_size = zstandard.ZstdCompressor(level=3, write_content_size=False)
    wrong = [no_size.compress(data[:frame_size])] + frames[1:]
    cases.append(("a frame that declares no content size", build(wrong)[1]))
    with_sum = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data[:frame_size])
    wrong = [with_sum[:-1] + bytes([with_sum[-1] ^ 1])] + frames[1:]
    cases.append(("a frame whose zstd content checksum does not match", build(wrong)[1]))
    empty = zstandard.ZstdCompressor(level=3).compress(b"")  # decodes to nothing
    cases.append(("a frame followed by an empty zstd frame",
                  build([frames[0] + empty] + frames[1:])[1]))
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"junk"
    cases.append(("a frame followed by a skippable frame",
                  build([frames[0] + skippable] + frames[1:])[1]))
    cases.append(("a skippable frame before a frame",
                  build([skippable + frames[0]] + frames[1:])[1]))

    items = dict(good)
    items[base] = bytearray(items[base])
    items[base][4] = 4
    items[base][72:80] = fmt.xxh3(bytes(items[base][:72])).to_bytes(8, "little")
    items[base] = bytes(items[base])
    cases.append(("format version 4", items))
    cases.append(("flags bit 1 set", build(frames, flags=2)[1]))
    cases.append(("reserved byte set", build(frames, reserved=1)[1]))
    cases.append(("codec 2", build(frames, codec=2)[1]))
    cases.append(("another key's entry (key hash)", build(frames, key_hash=fmt.xxh3(b"cc:{x}"))[1]))
    items = dict(good)
    k = fmt.chunk_key(base, int.from_bytes(good[base][8:16], "little"), 0)
    items[k] = items[k][:-1]
    cases.append(("a chunk one byte short", items))
    items = dict(good)
    del items[fmt.chunk_key(base, int.from_bytes(good[base][8:16], "little"), 1)]
    cases.append(("a chunk missing", items))
    items = dict(good)
    items[base] = items[base][:72] + bytes(8) + items[base][80:]
    cases.append(("a wrong header checksum", items))
    cases.append(("chunk size under 128 in the manifest", build(frames, chunk_size=100)[1]))
    cases.append(("inline flag on a chunked entry", build(frames, flags=1)[1]))
    return cases


# ---------------------------------------------------------------------------------------------
# The cases.

CASES = []


def case(f):
    CASES.append(f)
    return f


class Context:
    pass


def doc_reader_text():
    """The ```python block of FORMAT.md's last section, "A reader in Python"."""
    text = open(FORMAT_MD, encoding="utf-8").read()
    section = text[text.index("## A reader in Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def module_reader_text():
    text = open(os.path.join(HERE, "chunkcache_format.py"), encoding="utf-8").read()
    start = text.index("# --- reader:")
    start = text.index("\n", start) + 1
    return text[start:text.index("# --- end of reader ---")]


@case
def doc_reader_is_the_module_reader(ctx):
    assert doc_reader_text() == module_reader_text(), (
        "FORMAT.md's Python reader and chunkcache_format.py's reader differ")


@case
def keys_and_key_hash_as_documented(ctx):
    assert fmt.esc(b"a b{c}") == b"a%20b%7Bc%7D"
    assert fmt.esc(b"%\x00\x7f\xff~!") == b"%25%00%7F%FF~!"
    assert fmt.manifest_key(b"cc:", b"catalogue") == b"cc:{catalogue}"
    assert fmt.chunk_key(b"cc:{catalogue}", 0x1f2e3d4c5b6a7988, 1) == \
        b"cc:{catalogue}:1f2e3d4c5b6a7988:1"
    assert fmt.xxh3(b"cc:{catalogue}") == 0xcdbffc1b786822d6
    assert fmt.xxh3(b"cc:{catalogue}").to_bytes(8, "little") == bytes.fromhex("d62268781bfcbfcd")


def python_cases(ctx):
    """(name, prefix, key, data, encode options) of the Python writer's entries."""
    rng = random.Random(1)
    medium = small_json(rng, 300_000)
    tiny = b'{"ok":true}'
    weird_key = b"a key {with} braces %41 \xe2\x98\x83 \xff\x01."  # argv: no NUL
    return [
        ("frames of 1 KiB, inline", b"cc:", b"f1k", medium, dict(frame_size=1024)),
        ("frames of 1 KiB, chunked (C = 16384)", b"cc:", b"f1kc", medium,
         dict(frame_size=1024, chunk_size=16384)),
        ("frames of 64 KiB over the catalogue", b"cc:", b"f64k", ctx.catalogue,
         dict(frame_size=64 << 10)),
        ("frames of 1 MiB over the catalogue", b"cc:", b"f1m", ctx.catalogue,
         dict(frame_size=1 << 20)),
        ("chunkcache's choice of F over the catalogue", b"cc:", b"fdefault", ctx.catalogue, {}),
        ("F larger than the payload (one frame)", b"cc:", b"fbig", medium,
         dict(frame_size=1 << 30)),
        ("frames spanning chunk boundaries (C = 1000)", b"cc:", b"span", medium,
         dict(frame_size=20_000, chunk_size=1000)),
        ("frames spanning chunk boundaries (C = 128)", b"cc:", b"span128", medium,
         dict(frame_size=100_000, chunk_size=128)),
        ("inline, one frame", b"cc:", b"tiny", tiny, {}),
        ("inline, three frames", b"cc:", b"tiny3", tiny, dict(frame_size=4)),
        ("inline at C = 128", b"cc:", b"tiny128", tiny, dict(chunk_size=128)),
        ("frames with a zstd content checksum", b"cc:", b"xsum", medium,
         dict(frame_size=64 << 10, content_checksum=True)),
        ("a key with spaces, braces, non-ASCII bytes; another prefix", b"my app{1}/\xc3\xa9:",
         weird_key, medium, dict(frame_size=50_000, chunk_size=4096)),
        ("one raw byte", b"cc:", b"one", b"1", {}),
        ("level 19, odd F", b"cc:", b"l19", medium, dict(frame_size=33_333, level=19)),
    ]


@case
def python_writes_python_reads(ctx):
    readers = [fmt.read, ctx.doc.read]
    for name, prefix, key, data, options in python_cases(ctx):
        backend = DictBackend()
        base, manifest, chunks = fmt.encode(prefix, key, data, **options)
        assert manifest[4] == 3
        backend.items = dict(chunks)
        backend.items[base] = manifest
        for read in readers:
            assert read(backend.mget, prefix, key) == data, name
        # The payload is a zstd stream: one decompressor, all frames.
        payload = manifest[fmt.parse_manifest(manifest, base, 1 << 30, 1 << 30)[
            "payload_offset"]:] if not chunks else b"".join(c for _, c in chunks)
        stream = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload),
                                                            read_across_frames=True)
        assert stream.read() == data, name


@case
def python_reads_versions_1_and_2(ctx):
    rng = random.Random(2)
    for version in (1, 2):
        for data, chunk_size in ((b'{"v":1}', 1 << 20), (small_json(rng, 50_000), 1000)):
            backend = DictBackend()
            backend.items = entry_v1_v2(version, b"cc:", b"old", data, chunk_size)
            for read in (fmt.read, ctx.doc.read):
                assert read(backend.mget, b"cc:", b"old") == data
            # Under another key: version 2 is refused, version 1 cannot tell.
            moved = DictBackend()
            moved.items = {k.replace(b"{old}", b"{new}"): v for k, v in backend.items.items()}
            if version == 2:
                try:
                    fmt.read(moved.mget, b"cc:", b"new")
                    raise AssertionError("version 2 read under another key")
                except fmt.Corrupt:
                    pass
            else:
                assert fmt.read(moved.mget, b"cc:", b"new") == data


@case
def python_refuses_hostile_entries(ctx):
    data = small_json(random.Random(3), 200_000)
    for name, items in hostile_entries(b"cc:", b"bad", data, 40_000, 4096):
        for read in (fmt.read, ctx.doc.read):
            backend = DictBackend()
            backend.items = items
            try:
                got = read(backend.mget, b"cc:", b"bad")
            except Exception as e:  # the doc's Corrupt is another class than the module's
                assert type(e).__name__ == "Corrupt", "%s: %r" % (name, e)
                continue
            raise AssertionError("%s: read returned %r" % (name, got and got[:20]))


@case
def python_reader_batches_chunk_keys(ctx):
    data = os.urandom(400_000)  # incompressible: ~3,100 chunks of 128 bytes
    key = bytes(range(256)) * 4  # 1,024 bytes, escaped to ~3 KB
    backend = DictBackend()
    base, manifest, chunks = fmt.encode(b"cc:", key, data, chunk_size=128)
    backend.items = dict(chunks)
    backend.items[base] = manifest
    assert fmt.read(backend.mget, b"cc:", key) == data
    batches = [c for c in backend.calls if c != [base]]
    assert len(batches) > 1, "one request for %d chunk keys" % len(chunks)
    for batch in batches:
        key_bytes = sum(map(len, batch))
        assert key_bytes - len(batch[-1]) < fmt.MAX_KEY_BYTES_PER_BATCH, key_bytes


class TornBackend(DictBackend):
    """Runs `before_chunks` once before each of the first `times` chunk fetches."""

    def __init__(self, items, base, before_chunks, times):
        super().__init__()
        self.items, self.base, self.before, self.times = dict(items), base, before_chunks, times

    def mget(self, keys):
        if keys != [self.base] and self.times > 0:
            self.times -= 1
            self.before(self)
        return super().mget(keys)


@case
def python_reader_restarts_torn_reads(ctx):
    rng = random.Random(4)
    old, new = small_json(rng, 100_000), small_json(rng, 120_000)

    def items_of(data):
        base, manifest, chunks = fmt.encode(b"cc:", b"k", data, frame_size=30_000,
                                            chunk_size=4096)
        items = dict(chunks)
        items[base] = manifest
        return base, items

    base, first = items_of(old)

    def replace(backend):  # a writer commits a new version and deletes the old chunks
        _, items = items_of(new)
        backend.items = items

    for read in (fmt.read, ctx.doc.read):
        # Replaced once while reading: the reader starts over and returns the new version.
        backend = TornBackend(first, base, replace, 1)
        assert read(backend.mget, b"cc:", b"k") == new
        # Replaced before every chunk fetch: a miss after 4 attempts, not corrupt.
        backend = TornBackend(first, base, replace, 100)
        assert read(backend.mget, b"cc:", b"k") is None
        assert sum(1 for c in backend.calls if c == [base]) == 2 * 4  # 4 attempts, 3 restarts
        # Removed while reading: start over, then a miss.
        backend = TornBackend(first, base, lambda b: b.items.clear(), 1)
        assert read(backend.mget, b"cc:", b"k") is None

        # A chunk lost with the manifest unchanged: corrupt.
        def lose(backend):
            backend.items.pop(fmt.chunk_key(base, int.from_bytes(first[base][8:16], "little"), 2))

        backend = TornBackend(first, base, lose, 1)
        try:
            read(backend.mget, b"cc:", b"k")
            raise AssertionError("a lost chunk was not corrupt")
        except Exception as e:
            assert type(e).__name__ == "Corrupt", repr(e)


@case
def python_writer_ttls_and_replaced_chunks(ctx):
    r = ctx.redis
    data = small_json(random.Random(5), 100_000)
    base = fmt.write(r, b"ttl:", b"k", data, ttl_ms=600_000, chunk_ttl_grace_ms=30_000,
                     frame_size=10_000, chunk_size=4096)
    manifest = r.mget([base])[0]
    generation = int.from_bytes(manifest[8:16], "little")
    count = int.from_bytes(manifest[36:40], "little")
    assert count > 1
    assert 590_000 < r.call(b"PTTL", base) <= 600_000
    for i in range(count):
        assert 620_000 < r.call(b"PTTL", fmt.chunk_key(base, generation, i)) <= 630_000
    fmt.write(r, b"ttl:", b"k", data, frame_size=10_000, chunk_size=4096)
    assert r.call(b"EXISTS", fmt.chunk_key(base, generation, 0)) == 0, "replaced chunks kept"
    assert fmt.read(r.mget, b"ttl:", b"k") == data


# --- with the CLI -----------------------------------------------------------------------------


def cli(ctx, *args, check=True):
    """Runs `chunkcache --backend=redis://... ARGS`; returns the CompletedProcess."""
    argv = [ctx.cli, "--backend=redis://127.0.0.1:%d" % ctx.redis_server.port] + list(args)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError("%r exited %d: %s" % (args, p.returncode, p.stderr.decode(
            errors="replace")[-2000:]))
    return p


def zstd_d(ctx, path):
    """`zstd -d` of the file (every frame of the stream); zstandard's where the tool is absent."""
    if shutil.which("zstd"):
        return subprocess.run(["zstd", "-q", "-d", "-c", path], stdout=subprocess.PIPE,
                              check=True).stdout
    if "no zstd tool: decoded with zstandard instead" not in ctx.notes:
        ctx.notes.append("no zstd tool: decoded with zstandard instead")
    with open(path, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()


def describe(name, h):
    return "  %-62s v%d raw %9d stored %8d frames %5d chunks %5d of %d" % (
        name[:62], h["version"], h["raw"], h["stored"], len(h["frames"]), h["count"],
        h["chunk_size"])


def cli_cases(ctx):
    rng = random.Random(6)
    cases = [("the 10 MB catalogue", b"cc:", b"catalogue", ctx.catalogue, None),
             ("the 10 MB catalogue, C = 4096", b"cc:", b"catalogue", ctx.catalogue, 4096),
             ("the 10 MB catalogue, C = 128", b"cc:", b"catalogue", ctx.catalogue, 128),
             ("tiny JSON (inline)", b"cc:", b"tiny", b'{"a":[1,2,3]}', None),
             ("tiny JSON (inline), C = 128", b"cc:", b"tiny", b'{"a":[1,2,3]}', 128),
             ("generated JSON, C = 4096", b"cc:", b"gen", small_json(rng, 700_000), 4096),
             ("a key with spaces, braces, non-ASCII bytes; another prefix", b"my app{1}/\xc3\xa9:",
              b"a key {with} braces %41 \xe2\x98\x83 \xff.", small_json(rng, 300_000), 4096)]
    for name in ("citm_catalog.json", "twitter.json"):
        path = os.path.join(ctx.shared_dir or "/nonexistent", "corpus", name)
        if os.path.exists(path):
            data = open(path, "rb").read()
            cases += [("corpus " + name, b"cc:", name.encode(), data, None),
                      ("corpus %s, C = 128" % name, b"cc:", name.encode(), data, 128)]
        else:
            print("  note: %s not found: its cases not run" % path)
    return cases


@case
def cli_writes_python_reads(ctx):
    with tempfile.TemporaryDirectory() as tmp:
        for name, prefix, key, data, chunk_size in cli_cases(ctx):
            path = os.path.join(tmp, "in.json")
            open(path, "wb").write(data)
            args = ["--prefix=" + prefix.decode("utf-8", "surrogateescape")]
            if chunk_size:
                args.append("--chunk_size=%d" % chunk_size)
            before = time.time()
            cli(ctx, *(args + ["put", key.decode("utf-8", "surrogateescape"), path]))
            base = fmt.manifest_key(prefix, key)
            manifest = ctx.redis.mget([base])[0]
            assert manifest is not None, "%s: no manifest under %r" % (name, base)
            assert manifest[4] == 3, "%s: the CLI wrote version %d" % (name, manifest[4])
            for read in (fmt.read, ctx.doc.read):
                assert read(ctx.redis.mget, prefix, key) == data, name
            h = fmt.parse_manifest(manifest, base, 64 << 20, 1 << 20)
            print(describe(name, h))
            c = min(chunk_size or (1 << 20), 1 << 20)
            # What FORMAT.md says the writer chooses (readers do not check these).
            assert h["chunk_size"] == c, "%s: chunk size %d" % (name, h["chunk_size"])
            inline = 80 + 12 * len(h["frames"]) + h["stored"] <= c
            assert (h["count"] == 0) == inline, "%s: inline %s" % (name, h["count"] == 0)
            frame_size = int.from_bytes(manifest[64:68], "little")
            expected = fmt.pick_frame_size(len(data), c)
            if frame_size != expected:
                ctx.notes.append("%s: the CLI chose F = %d (%d frames), FORMAT.md's rule gives %d"
                                 % (name, frame_size, len(h["frames"]), expected))
            # Its frames: no dictionary, no content checksum, each declaring its raw size.
            payload = manifest[h["payload_offset"]:] if h["count"] == 0 else b"".join(
                ctx.redis.mget([fmt.chunk_key(base, h["generation"], i)
                                for i in range(h["count"])]))
            at = 0
            for raw_j, size, _ in h["frames"]:
                params = zstandard.get_frame_parameters(payload[at:at + size])
                assert (params.content_size, params.dict_id, params.has_checksum) == (
                    raw_j, 0, False), "%s: frame at %d" % (name, at)
                at += size
            created = int.from_bytes(manifest[48:56], "little", signed=True)
            assert before * 1000 - 5000 <= created <= time.time() * 1000 + 5000, created
            assert 3_590_000 < ctx.redis.call(b"PTTL", base) <= 3_600_000
            if h["count"]:
                ttl = ctx.redis.call(b"PTTL", fmt.chunk_key(base, h["generation"], 0))
                assert 3_650_000 < ttl <= 3_660_000, "%s: chunk TTL %d" % (name, ttl)
            # get --compressed: the payload, a zstd stream that `zstd -d` decodes.
            out = os.path.join(tmp, "out.zst")
            cli(ctx, *(args + ["get", "--compressed", key.decode("utf-8", "surrogateescape"),
                               "-o", out]))
            compressed = open(out, "rb").read()
            assert compressed == payload, "%s: get --compressed is not the payload" % name
            assert zstd_d(ctx, out) == data, "%s: zstd -d" % name


@case
def python_writes_cli_reads(ctx):
    with tempfile.TemporaryDirectory() as tmp:
        for name, prefix, key, data, options in python_cases(ctx):
            base = fmt.write(ctx.redis, prefix, key, data, **options)
            print(describe(name, fmt.parse_manifest(ctx.redis.mget([base])[0], base, 1 << 30,
                                                    1 << 30)))
            k = key.decode("utf-8", "surrogateescape")
            p = ["--prefix=" + prefix.decode("utf-8", "surrogateescape")]
            out = os.path.join(tmp, "out.json")
            cli(ctx, *(p + ["get", k, "-o", out]))
            assert open(out, "rb").read() == data, "%s: CLI get differs" % name
            v = cli(ctx, *(p + ["verify", k]), check=False)
            assert v.returncode == 0, "%s: verify exited %d: %s" % (name, v.returncode, v.stderr)
            cli(ctx, *(p + ["get", "--compressed", k, "-o", out]))
            assert zstd_d(ctx, out) == data, "%s: zstd -d of get --compressed" % name


@case
def cli_and_python_refuse_entries_over_their_limits(ctx):
    data = small_json(random.Random(9), 100_000)
    fmt.write(ctx.redis, b"lim:", b"k", data, chunk_size=4096)
    p = cli(ctx, "--prefix=lim:", "--max_payload_size=%d" % (len(data) - 1), "get", "k",
            check=False)
    assert p.returncode == EXIT_CORRUPT, (p.returncode, p.stderr)
    assert cli(ctx, "--prefix=lim:", "--max_payload_size=%d" % len(data), "get", "k").stdout == data
    for read in (fmt.read, ctx.doc.read):
        try:
            read(ctx.redis.mget, b"lim:", b"k", max_payload_size=len(data) - 1)
            raise AssertionError("read over max_payload_size")
        except Exception as e:
            assert type(e).__name__ == "Corrupt", repr(e)
        assert read(ctx.redis.mget, b"lim:", b"k", max_payload_size=len(data)) == data
        try:  # chunks of 4096 bytes, more than this reader's backend holds
            read(ctx.redis.mget, b"lim:", b"k", max_item_size=4095)
            raise AssertionError("read over max_item_size")
        except Exception as e:
            assert type(e).__name__ == "Corrupt", repr(e)


@case
def cli_reads_versions_1_and_2(ctx):
    rng = random.Random(8)
    with tempfile.TemporaryDirectory() as tmp:
        for version in (1, 2):
            for data, chunk_size in ((b'{"v":1}', 1 << 20), (small_json(rng, 50_000), 1000)):
                for k, v in entry_v1_v2(version, b"old:", b"k", data, chunk_size).items():
                    ctx.redis.set(k, v, 600_000)
                out = os.path.join(tmp, "out.json")
                cli(ctx, "--prefix=old:", "get", "k", "-o", out)
                assert open(out, "rb").read() == data, "version %d" % version


@case
def cli_refuses_hostile_entries(ctx):
    data = small_json(random.Random(3), 200_000)
    failures = []
    previous = []
    for name, items in hostile_entries(b"bad:", b"k", data, 40_000, 4096):
        ctx.redis.delete(previous)
        previous = list(items)
        for k, v in items.items():
            ctx.redis.set(k, v, 600_000)
        for command in (["get", "k", "-o", os.devnull], ["verify", "k"]):
            p = cli(ctx, "--prefix=bad:", *command, check=False)
            if p.returncode != EXIT_CORRUPT:
                failures.append("%s: %s exited %d (want %d): %s" % (
                    name, command[0], p.returncode, EXIT_CORRUPT,
                    p.stderr.decode(errors="replace").strip()[-300:]))
    assert not failures, "\n    ".join([""] + failures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cli", help="the chunkcache tool; without it only Python cases run")
    parser.add_argument("--gen_catalogue", help="the project's gen_catalogue tool")
    parser.add_argument("--shared_dir", help="folder holding corpus/*.json")
    parser.add_argument("--only", default="", help="run the cases whose name holds this")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("SKIP: redis-server not found")
        return SKIP

    ctx = Context()
    ctx.cli, ctx.shared_dir, ctx.notes = args.cli, args.shared_dir, []
    doc = {}
    exec(compile(doc_reader_text(), FORMAT_MD + " (A reader in Python)", "exec"), doc)
    ctx.doc = argparse.Namespace(**doc)
    if args.gen_catalogue:
        ctx.catalogue = subprocess.run([args.gen_catalogue], stdout=subprocess.PIPE,
                                       check=True).stdout
    else:  # a smaller stand-in
        ctx.catalogue = small_json(random.Random(0), 3_000_000)
        print("note: no --gen_catalogue: a 3 MB generated JSON instead of the catalogue")
    ctx.redis_server = RedisServer()
    ctx.redis = ctx.redis_server.client
    failed = 0
    try:
        for f in CASES:
            if args.only not in f.__name__ or (f.__name__.find("cli") >= 0 and not args.cli):
                continue
            start = time.time()
            try:
                f(ctx)
                print("PASS %s (%.1f s)" % (f.__name__, time.time() - start))
            except Exception:
                failed += 1
                print("FAIL %s\n%s" % (f.__name__, traceback.format_exc()))
            sys.stdout.flush()
    finally:
        ctx.redis.close()
        ctx.redis_server.stop()
    for note in ctx.notes:
        print("note:", note)
    print("%s: %d failed" % ("FAILED" if failed else "OK", failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
