#!/usr/bin/env python3
"""Removes a WebAssembly component's top-level name and producer sections.

    strip-wasm.py IN OUT

`cargo build --profile rule` strips the core module (`strip = true`), but the
component wrapper that wasm-component-ld adds afterwards carries a
`component-name` section (about 4 KB for a rule: the names of its imports and
exports, used for nothing at run time) and a `producers` section. This is
`wasm-tools strip --all` for those two sections only, without building
wasm-tools: a component is an 8-byte preamble, then sections, each an id
byte, a LEB128 size and that many bytes; a custom section (id 0) begins with
its name. Other sections, and everything inside the embedded core modules,
are copied unchanged.
"""

import sys

DROPPED = {b"component-name", b"producers"}


def leb128(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated LEB128")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def strip(data: bytes) -> bytes:
    if data[:4] != b"\0asm":
        raise ValueError("not a WebAssembly binary")
    out, pos = bytearray(data[:8]), 8
    while pos < len(data):
        start = pos
        section_id = data[pos]
        size, body = leb128(data, pos + 1)
        end = body + size
        if end > len(data):
            raise ValueError(f"section at byte {start} runs past the end")
        if section_id == 0:
            name_len, name_at = leb128(data, body)
            if data[name_at : name_at + name_len] in DROPPED:
                pos = end
                continue
        out += data[start:end]
        pos = end
    return bytes(out)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    source, target = sys.argv[1:]
    with open(source, "rb") as f:
        data = f.read()
    try:
        stripped = strip(data)
    except ValueError as e:
        print(f"strip-wasm: {source}: {e}", file=sys.stderr)
        return 1
    with open(target, "wb") as f:
        f.write(stripped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
