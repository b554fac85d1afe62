#!/usr/bin/env python3
"""Re-encode screenshot PNGs with a palette of at most 256 colours, in place (stdlib only).

    scripts/png_palette.py FILE.png...

Chromium writes 8-bit RGB(A); a status page has a few flat colours plus the shades of
anti-aliased text, so a tall page is 500 kB and more. Here 256 of its colours become the
palette (see palette_for) and each other colour, a rare edge shade, takes the nearest of
them: lossless when the image has 256 colours or fewer, and the pixels stay where they were,
so the layout is the one Chromium drew. A file is only replaced when the result is smaller.
Scripts/screenshots.sh uses it (no pngcrush/optipng/ImageMagick needed).
"""
import collections
import struct
import sys
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunks(data):
    """(type, body) of each chunk."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    at = len(SIGNATURE)
    while at < len(data):
        (n,) = struct.unpack(">I", data[at : at + 4])
        yield data[at + 4 : at + 8], data[at + 8 : at + 8 + n]
        at += 12 + n


def add_bytes(a, b):
    """Bytewise (a + b) mod 256 of two equal-length byte strings, as one big-int sum (fast)."""
    n = len(a)
    low = int.from_bytes(b"\x7f" * n, "big")
    high = int.from_bytes(b"\x80" * n, "big")
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "big")


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def unfilter_row(kind, f, prev, bpp):
    """One scanline's bytes from its filtered bytes (PNG spec, section 9)."""
    if kind == 0:
        return f
    if kind == 2:
        return add_bytes(f, prev)
    out = bytearray(f)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 1:
            out[i] = (out[i] + left) & 255
        elif kind == 3:
            out[i] = (out[i] + ((left + prev[i]) >> 1)) & 255
        else:
            up_left = prev[i - bpp] if i >= bpp else 0
            out[i] = (out[i] + paeth(left, prev[i], up_left)) & 255
    return bytes(out)


def read_rgb(path):
    """(width, height, rows): each row a list of (r, g, b) tuples."""
    with open(path, "rb") as fh:
        data = fh.read()
    idat = bytearray()
    for kind, body in chunks(data):
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"{path}: only 8-bit, non-interlaced RGB or RGBA")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = 1 + w * bpp
    prev = bytes(w * bpp)
    rows = []
    for y in range(h):
        line = raw[y * stride : (y + 1) * stride]
        prev = unfilter_row(line[0], line[1:], prev, bpp)
        # Alpha is dropped: a screenshot is opaque.
        rows.append(list(zip(prev[0::bpp], prev[1::bpp], prev[2::bpp])))
    return w, h, rows


def distance(a, b):
    return sum((p - q) ** 2 for p, q in zip(a, b))


def palette_for(counts):
    """At most 256 colours, and each colour's index in them. Greedy: the next colour is the
    one whose pixels are worst served so far (count x squared distance to the nearest chosen
    one), so the shades of blue link text get entries though each is rare."""
    colours = list(counts)
    palette = [counts.most_common(1)[0][0]]
    nearest = {c: (distance(c, palette[0]), 0) for c in colours}
    while len(palette) < 256:
        worst = max(colours, key=lambda c: counts[c] * nearest[c][0])
        if nearest[worst][0] == 0:
            break
        palette.append(worst)
        for c in colours:
            d = distance(c, worst)
            if d < nearest[c][0]:
                nearest[c] = (d, len(palette) - 1)
    return palette, {c: i for c, (_, i) in nearest.items()}


def chunk(kind, body):
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode_indexed(w, h, rows, palette, index):
    # Filter 0 on every row: what suits a palette image (PNG spec, 12.8).
    raw = b"".join(b"\x00" + bytes(index[c] for c in row) for row in rows)
    return (
        SIGNATURE
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", b"".join(bytes(c) for c in palette))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def shrink(path):
    w, h, rows = read_rgb(path)
    counts = collections.Counter(c for row in rows for c in row)
    palette, index = palette_for(counts)
    png = encode_indexed(w, h, rows, palette, index)
    with open(path, "rb") as fh:
        before = len(fh.read())
    if len(png) < before:
        with open(path, "wb") as fh:
            fh.write(png)
    exact = "exact" if len(counts) <= 256 else f"{len(counts)} colours to 256"
    print(f"{path}: {before} -> {min(before, len(png))} bytes ({exact})")


def main(paths):
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for p in paths:
        shrink(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
