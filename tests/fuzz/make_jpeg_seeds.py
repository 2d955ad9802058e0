#!/usr/bin/python3
"""Makes the JPEG files the tests and fuzz targets start from, with Pillow (Debian's
python3-pil, on the system libjpeg-turbo): run once, the outputs are committed.

    /usr/bin/python3 tests/fuzz/make_jpeg_seeds.py

tests/data/pil_gradient_q95.jpg  16x12 RGB, R = 16*x + 8, G = 20*y + 10, B = 128 - 4*(x+y),
                                 quality 95, 4:4:4; test_dataset compares our decode with
                                 that formula and (FNV-1a 64 of the bytes) with Pillow's own
                                 decode, printed below
tests/fuzz/corpus/jpeg/*         for fuzz_jpeg: one byte choosing want_channels (0 -> 0,
                                 1 -> 1, 2 -> 3), then the file
tests/fuzz/corpus/dataset/jpeg-* for fuzz_dataset: byte 0 = 4 (factor 1, JPEG frame),
                                 two bytes of frame length, the frame, then the label PNG
"""
import io
import os
import struct

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gradient(w, h):
    """The coordinate-coded RGB image described above."""
    im = Image.new('RGB', (w, h))
    im.putdata([(16 * x + 8, 20 * y + 10, 128 - 4 * (x + y)) for y in range(h) for x in range(w)])
    return im


def jpeg(im, **kw):
    """im encoded as JPEG bytes with Pillow's options kw."""
    b = io.BytesIO()
    im.save(b, 'JPEG', **kw)
    return b.getvalue()


def png(im):
    """im encoded as PNG bytes."""
    b = io.BytesIO()
    im.save(b, 'PNG')
    return b.getvalue()


def fnv1a64(data):
    """FNV-1a 64-bit hash of data (bytes)."""
    h = 0xcbf29ce484222325
    for c in data:
        h = ((h ^ c) * 0x100000001b3) & 0xffffffffffffffff
    return h


def put(path, data):
    """Writes data to ROOT/path."""
    with open(os.path.join(ROOT, path), 'wb') as f:
        f.write(data)


def main():
    g = gradient(16, 12)
    ref = jpeg(g, quality=95, subsampling=0)
    put('tests/data/pil_gradient_q95.jpg', ref)
    decoded = Image.open(io.BytesIO(ref)).convert('RGB').tobytes()
    print(f'pil_gradient_q95.jpg: Pillow decodes to FNV-1a 64 0x{fnv1a64(decoded):016x}')

    small = gradient(8, 6)
    seeds = {
        'rgb420_q75': (2, jpeg(small, quality=75)),
        'rgb444_keep': (0, jpeg(small, quality=90, subsampling=0)),
        'grey_keep': (0, jpeg(small.convert('L'), quality=80)),
        'grey_as_rgb': (2, jpeg(small.convert('L'), quality=80)),
        'progressive_as_grey': (1, jpeg(small, quality=85, progressive=True)),
        'optimized_huffman': (2, jpeg(small, quality=60, optimize=True)),
        'cmyk': (2, jpeg(small.convert('CMYK'), quality=80)),
        'truncated': (2, jpeg(small, quality=75)[:-40]),
    }
    huge = bytearray(jpeg(small, quality=75))
    sof = huge.index(b'\xff\xc0')                 # baseline SOF0: FF C0 len P H W
    struct.pack_into('>HH', huge, sof + 5, 30000, 30000)
    seeds['huge-header-tiny-file'] = (2, bytes(huge))
    for name, (want, data) in seeds.items():
        put(f'tests/fuzz/corpus/jpeg/{name}', bytes([want]) + data)

    lab = Image.new('L', (8, 6))
    lab.putdata([(x + y) % 12 for y in range(6) for x in range(8)])
    frame = jpeg(small, quality=92)
    put('tests/fuzz/corpus/dataset/jpeg-valid-f1',
        bytes([4]) + struct.pack('<H', len(frame)) + frame + png(lab))
    frame = jpeg(small, quality=92, progressive=True)
    put('tests/fuzz/corpus/dataset/jpeg-progressive-f2',
        bytes([5]) + struct.pack('<H', len(frame)) + frame + png(lab))


if __name__ == '__main__':
    main()
