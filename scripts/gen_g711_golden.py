#!/usr/bin/env python3
"""Generate the G.711 golden vectors that the codecs tests compare against.

The reference is CPython's `audioop` module (3.11; it was removed in 3.13), an implementation
nobody on this project wrote. It descends from Sun Microsystems' g711.c.

Writes, under codecs/tests/data/:
  ulaw_encode.bin  65,536 bytes: lin2ulaw of every 16-bit sample, in order -32768 ..= 32767
  alaw_encode.bin  65,536 bytes: lin2alaw of the same
  ulaw_decode.bin  256 little-endian i16: ulaw2lin of codes 0x00 ..= 0xFF
  alaw_decode.bin  256 little-endian i16: alaw2lin of the same

Usage: python3 scripts/gen_g711_golden.py [output-dir]
"""

import os
import struct
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # noqa: E402  (deprecated in 3.11, removed in 3.13)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "codecs", "tests", "data")
    out_dir = sys.argv[1] if len(sys.argv) > 1 else default
    os.makedirs(out_dir, exist_ok=True)

    linear = struct.pack("<65536h", *range(-32768, 32768))
    codes = bytes(range(256))
    files = {
        "ulaw_encode.bin": audioop.lin2ulaw(linear, 2),
        "alaw_encode.bin": audioop.lin2alaw(linear, 2),
        # audioop works in native byte order; normalise to little-endian on disk.
        "ulaw_decode.bin": to_le(audioop.ulaw2lin(codes, 2)),
        "alaw_decode.bin": to_le(audioop.alaw2lin(codes, 2)),
    }
    for name, data in files.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        print(f"wrote {name} ({len(data)} bytes)")


def to_le(native: bytes) -> bytes:
    values = struct.unpack(f"={len(native) // 2}h", native)
    return struct.pack(f"<{len(values)}h", *values)


if __name__ == "__main__":
    main()
