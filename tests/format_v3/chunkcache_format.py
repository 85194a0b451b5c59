"""chunkcache's stored format (docs/FORMAT.md) in Python: a reader and a writer.

Written from docs/FORMAT.md alone, as a check that the page is complete: interop_test.py runs
this against the `chunkcache` tool both ways.

The reader (versions 1, 2 and 3) is the text between the two "reader" marker lines below, and it
is the same text, byte for byte, as the code block of FORMAT.md's "A reader in Python" section
(interop_test.py checks that). The writer (version 3 only: writers write the newest version)
follows it.

A backend here is any object with
    mget(keys: list[bytes]) -> list[bytes | None]   None: absent; raises on a backend failure
and, for the writer,
    set(key: bytes, value: bytes, ttl_ms: int)      store with a time to live
    delete(keys: list[bytes])
Needs Debian's python3-xxhash and python3-zstandard.
"""

import os
import time

# --- reader: the same text as docs/FORMAT.md's "A reader in Python" ---
import xxhash
import zstandard

HEADER_SIZE = {1: 64, 2: 72, 3: 80}  # by format version (byte 4)
MIN_CHUNK_SIZE = 128  # kMinChunkSize
MAX_READ_ATTEMPTS = 4  # kMaxReadAttempts
MAX_KEY_BYTES_PER_BATCH = 256 * 1024  # any bound will do
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Corrupt(Exception):
    """The entry failed a check: a cache treats it as a miss (and counts it)."""


def xxh3(data) -> int:
    return xxhash.xxh3_64_intdigest(data)


def esc(raw: bytes) -> bytes:
    """Keys: 0x21-0x7E but { } % stay, every other byte becomes %XX."""
    return b"".join(bytes([c]) if 0x21 <= c <= 0x7E and c not in b"{}%" else b"%%%02X" % c
                    for c in raw)


def manifest_key(prefix: bytes, key: bytes) -> bytes:
    return esc(prefix) + b"{" + esc(key) + b"}"


def chunk_key(base: bytes, generation: int, i: int) -> bytes:
    return base + b":%016x:%d" % (generation, i)


def compress_bound(n: int):
    """ZSTD_compressBound(n); None where zstd has no bound."""
    if n >= 0xFF00FF00FF00FF00:
        return None
    return n + (n >> 8) + (((128 << 10) - n) >> 11 if n < (128 << 10) else 0)


def parse_manifest(m: bytes, base: bytes, max_payload_size: int, max_item_size: int) -> dict:
    """Step 2: the fields of manifest `m`, read from key `base`, or raises Corrupt.

    Every version is described by its frames: (raw size, compressed size, XXH3-64 of the
    compressed bytes). Versions 1 and 2 have one frame, whose checksum is the payload checksum.
    """
    if len(m) < 5 or m[:4] != b"CCMF" or m[4] not in HEADER_SIZE:
        raise Corrupt("not a manifest of version 1, 2 or 3")
    version, header = m[4], HEADER_SIZE[m[4]]
    if len(m) < header:
        raise Corrupt("shorter than its header")

    def u(offset, size):
        return int.from_bytes(m[offset:offset + size], "little")

    if u(header - 8, 8) != xxh3(m[:header - 8]):
        raise Corrupt("header checksum")
    if version >= 2 and u(56, 8) != xxh3(base):
        raise Corrupt("written under another key")
    if m[5] != 1 or m[6] not in (0, 1) or m[7] != 0:
        raise Corrupt("codec, flags or reserved byte")
    h = dict(version=version, generation=u(8, 8), raw=u(16, 8), stored=u(24, 8),
             chunk_size=u(32, 4), count=u(36, 4), checksum=u(40, 8))
    if h["raw"] > max_payload_size:
        raise Corrupt("raw size over max_payload_size")
    if version < 3:
        bound = compress_bound(h["raw"])
        if h["stored"] == 0 or bound is None or h["stored"] > bound:
            raise Corrupt("stored size")
        h["frames"] = [(h["raw"], h["stored"], h["checksum"])]
        table = 0
    else:
        frame_size, frame_count = u(64, 4), u(68, 4)
        if h["raw"] == 0 or frame_size == 0 or frame_count != -(-h["raw"] // frame_size):
            raise Corrupt("raw size, frame size or frame count")
        table = 12 * frame_count
        if len(m) < header + table:  # before reading the table: frame_count is stored bytes
            raise Corrupt("the frame table does not fit")
        if xxh3(m[header:header + table]) != h["checksum"]:
            raise Corrupt("table checksum")
        h["frames"] = []
        for j in range(frame_count):
            raw_j = min(frame_size, h["raw"] - frame_size * j)
            size, checksum = u(header + 12 * j, 4), u(header + 12 * j + 4, 8)
            if not 1 <= size <= compress_bound(raw_j):
                raise Corrupt("frame %d compressed size" % j)
            h["frames"].append((raw_j, size, checksum))
        if sum(size for _, size, _ in h["frames"]) != h["stored"]:
            raise Corrupt("frame sizes do not add up to the stored size")
    h["payload_offset"] = header + table
    if (m[6] == 1) != (h["count"] == 0):
        raise Corrupt("inline flag")
    if h["count"] == 0:
        if len(m) != header + table + h["stored"] or len(m) > max_item_size:
            raise Corrupt("inline length")
    elif (len(m) != header + table or len(m) > max_item_size
          or not MIN_CHUNK_SIZE <= h["chunk_size"] <= max_item_size
          or h["count"] != -(-h["stored"] // h["chunk_size"])):
        raise Corrupt("manifest length, chunk size or chunk count")
    return h


def decode_frame(data: bytes, raw: int) -> bytes:
    """Step 5: `data` must be exactly one zstd frame of `raw` bytes."""
    if data[:4] != ZSTD_MAGIC:
        raise Corrupt("not a zstd frame")
    try:
        if zstandard.get_frame_parameters(data).content_size != raw:
            raise Corrupt("declared content size")
        # decompressobj, not decompress(): the latter ignores bytes after the first frame.
        # It checks the frame's content checksum, if it has one.
        frame = zstandard.ZstdDecompressor().decompressobj()
        out = frame.decompress(data)
    except zstandard.ZstdError as e:
        raise Corrupt(str(e))
    if not frame.eof or frame.unused_data or len(out) != raw:
        raise Corrupt("not exactly one frame of its raw size")
    return out


def fetch_chunks(mget, base: bytes, h: dict):
    """Step 3: the chunks of manifest `h`, fetched in batches; None when one is absent."""
    n, size = h["count"], h["chunk_size"]
    chunks = []
    while len(chunks) < n:
        batch, batch_bytes = [], 0
        while len(chunks) + len(batch) < n and batch_bytes < MAX_KEY_BYTES_PER_BATCH:
            batch.append(chunk_key(base, h["generation"], len(chunks) + len(batch)))
            batch_bytes += len(batch[-1])
        for value in mget(batch):  # check each batch before asking for the next
            i = len(chunks)
            if value is None:
                return None
            if len(value) != (size if i < n - 1 else h["stored"] - size * (n - 1)):
                raise Corrupt("chunk %d size" % i)
            chunks.append(value)
    return chunks


def read(mget, prefix: bytes, key: bytes, max_payload_size=64 << 20, max_item_size=1 << 20):
    """The JSON bytes of `key`; None for a miss (absent, or kept changing); raises Corrupt
    (a miss too, but counted) or the backend's error."""
    base = manifest_key(prefix, key)

    def replaced(h):  # after an absent chunk: did a writer replace or remove the entry?
        try:
            m = mget([base])[0]
            now = None if m is None else parse_manifest(m, base, max_payload_size, max_item_size)
        except Exception:  # corrupt, or the backend failed: count it as changed
            return True
        return now is None or (now["generation"], now["checksum"]) != (h["generation"],
                                                                        h["checksum"])

    for _ in range(MAX_READ_ATTEMPTS):
        m = mget([base])[0]
        if m is None:
            return None
        h = parse_manifest(m, base, max_payload_size, max_item_size)
        if h["count"] == 0:
            payload = m[h["payload_offset"]:]
        else:
            chunks = fetch_chunks(mget, base, h)
            if chunks is None:
                if replaced(h):
                    continue  # start over
                raise Corrupt("a chunk is missing")
            payload = b"".join(chunks)
        out, start = [], 0
        for j, (raw_j, size, checksum) in enumerate(h["frames"]):
            data = payload[start:start + size]
            start += size
            if xxh3(data) != checksum:  # step 4, before decoding
                raise Corrupt("frame %d checksum" % j)
            out.append(decode_frame(data, raw_j))
        return b"".join(out)
    return None  # the entry kept changing
# --- end of reader ---

FORMAT_VERSION = 3
HEADER_V3 = HEADER_SIZE[3]
FRAME_TABLE_ENTRY = 12
DEFAULT_TTL_MS = 3600 * 1000  # CacheOptions::ttl, 1 h
DEFAULT_CHUNK_TTL_GRACE_MS = 60 * 1000  # chunk_ttl_grace, 1 min
DEFAULT_CHUNK_SIZE = 1 << 20  # C, 1 MiB
DEFAULT_FRAME_SIZE = 2 << 20  # CacheOptions::frame_size, 2 MiB


def pack_manifest_v3(base: bytes, *, generation: int, raw_size: int, frames: list,
                     frame_size: int, chunk_size: int, chunk_count: int, created_ms: int,
                     inline: bytes = b"", stored_size=None, frame_count=None, flags=None,
                     codec=1, reserved=0, table_checksum=None, key_hash=None) -> bytes:
    """A version-3 manifest for `frames`, a list of (compressed size, XXH3-64) per frame.

    The fields after `inline` default to what the others imply (a correct manifest); a test
    passes them to build a manifest that breaks one rule while every checksum still matches.
    """
    table = b"".join(size.to_bytes(4, "little") + checksum.to_bytes(8, "little")
                     for size, checksum in frames)
    if stored_size is None:
        stored_size = sum(size for size, _ in frames)
    if frame_count is None:
        frame_count = len(frames)
    if flags is None:
        flags = 1 if chunk_count == 0 else 0
    if table_checksum is None:
        table_checksum = xxh3(table)
    if key_hash is None:
        key_hash = xxh3(base)
    header = (b"CCMF" + bytes([FORMAT_VERSION, codec, flags, reserved]) +
              generation.to_bytes(8, "little") + raw_size.to_bytes(8, "little") +
              stored_size.to_bytes(8, "little") + chunk_size.to_bytes(4, "little") +
              chunk_count.to_bytes(4, "little") + table_checksum.to_bytes(8, "little") +
              created_ms.to_bytes(8, "little", signed=True) + key_hash.to_bytes(8, "little") +
              frame_size.to_bytes(4, "little") + frame_count.to_bytes(4, "little"))
    assert len(header) == HEADER_V3 - 8
    return header + xxh3(header).to_bytes(8, "little") + table + inline


def pick_frame_size(raw_size: int, chunk_size: int, target=DEFAULT_FRAME_SIZE) -> int:
    """chunkcache's choice of F: frames of about `target` raw bytes, evened out, and fewer
    (larger) when the frame table would not fit in the manifest item. (FORMAT.md does not say
    how much larger; this takes the most frames that fit. Readers do not check the choice.)"""
    frames = -(-raw_size // target)
    frames = min(frames, (chunk_size - HEADER_V3) // FRAME_TABLE_ENTRY)
    return -(-raw_size // frames)


def compress_frames(data: bytes, frame_size: int, level=3, content_checksum=False) -> list:
    """The payload's frames: each `frame_size` raw bytes (the last the rest), each one zstd
    frame recording its content size."""
    zstd = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                    write_checksum=content_checksum)
    return [zstd.compress(data[at:at + frame_size]) for at in range(0, len(data), frame_size)]


def encode(prefix: bytes, key: bytes, data: bytes, *, frame_size=None,
           chunk_size=DEFAULT_CHUNK_SIZE, generation=None, created_ms=None, level=3,
           content_checksum=False):
    """The items of one version-3 entry: (manifest key, manifest, [(chunk key, chunk)...]).

    `chunk_size` is the effective chunk size C (min of the cache's chunk_size and the backend's
    max_item_size); `frame_size` is F (default: pick_frame_size)."""
    if not 1 <= len(key) <= 1024:
        raise ValueError("a key is 1 to 1024 bytes, not %d" % len(key))
    if not data:
        raise ValueError("the JSON must be at least 1 byte")
    if chunk_size < MIN_CHUNK_SIZE:
        raise ValueError("chunk size %d is under %d" % (chunk_size, MIN_CHUNK_SIZE))
    if frame_size is None:
        frame_size = pick_frame_size(len(data), chunk_size)
    if frame_size < 1:
        raise ValueError("frame size must be at least 1")
    if generation is None:
        generation = int.from_bytes(os.urandom(8), "little")
    if created_ms is None:
        created_ms = int(time.time() * 1000)
    compressed = compress_frames(data, frame_size, level, content_checksum)
    return encode_frames(prefix, key, len(data), frame_size, compressed, chunk_size=chunk_size,
                         generation=generation, created_ms=created_ms)


def encode_frames(prefix: bytes, key: bytes, raw_size: int, frame_size: int, compressed: list,
                  *, chunk_size: int, generation: int, created_ms: int):
    """encode() from frames already compressed (a test passes hostile ones)."""
    base = manifest_key(prefix, key)
    frames = [(len(f), xxh3(f)) for f in compressed]
    payload = b"".join(compressed)
    table_bytes = FRAME_TABLE_ENTRY * len(frames)
    if HEADER_V3 + table_bytes > chunk_size:
        raise ValueError("%d frames: the frame table does not fit in a %d-byte item" %
                         (len(frames), chunk_size))
    fields = dict(generation=generation, raw_size=raw_size, frames=frames,
                  frame_size=frame_size, chunk_size=chunk_size, created_ms=created_ms)
    if HEADER_V3 + table_bytes + len(payload) <= chunk_size:  # inline
        return base, pack_manifest_v3(base, chunk_count=0, inline=payload, **fields), []
    chunks = [(chunk_key(base, generation, i), payload[at:at + chunk_size])
              for i, at in enumerate(range(0, len(payload), chunk_size))]
    return base, pack_manifest_v3(base, chunk_count=len(chunks), **fields), chunks


def write(backend, prefix: bytes, key: bytes, data: bytes, *, ttl_ms=DEFAULT_TTL_MS,
          chunk_ttl_grace_ms=DEFAULT_CHUNK_TTL_GRACE_MS, delete_replaced_chunks=True,
          max_payload_size=64 << 20, max_item_size=1 << 20, **encode_options):
    """The steps of "Writing": chunks (TTL ttl + grace), then the manifest (TTL ttl: the commit
    point), then the replaced generation's chunks are deleted (best effort). Returns the
    manifest key."""
    if len(data) > max_payload_size:
        raise ValueError("%d bytes of JSON: over max_payload_size" % len(data))
    base, manifest, chunks = encode(prefix, key, data, **encode_options)
    replaced = None
    if delete_replaced_chunks:
        try:
            old = backend.mget([base])[0]
            if old is not None:
                replaced = parse_manifest(old, base, max_payload_size, max_item_size)
        except Exception:  # best effort: a corrupt or unreadable old entry has no chunks to find
            replaced = None
    for k, chunk in chunks:
        backend.set(k, chunk, ttl_ms + chunk_ttl_grace_ms)
    backend.set(base, manifest, ttl_ms)
    if replaced is not None and replaced["count"] > 0:
        generation = int.from_bytes(manifest[8:16], "little")
        if replaced["generation"] != generation:
            keys = [chunk_key(base, replaced["generation"], i) for i in range(replaced["count"])]
            try:
                for at in range(0, len(keys), 1000):
                    backend.delete(keys[at:at + 1000])
            except Exception:
                pass
    return base
