"""Hostile input, round 6: image files whose decoding costs far more than their pixel count
says. Each case was reproduced before the change (times and sizes in the comments)."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tinycnn import preprocess
from tinycnn.preprocess import MAX_JPEG_SCANS, decode_image


def progressive_jpeg(extra_scans=0, side=64):
    """A progressive JPEG, its last scan repeated extra_scans more times (libjpeg only warns
    and decodes each repeat: 1,000 repeats over 6000x6000 pixels took 33 s from 200 KB)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side), np.uint8)).save(
        buffer, "JPEG", progressive=True, quality=80)
    data = buffer.getvalue()
    assert data.endswith(b"\xff\xd9")
    last_scan = data[data.rindex(b"\xff\xda"):-2]          # its header and entropy data, up to EOI
    return data[:-2] + last_scan * extra_scans + b"\xff\xd9"


def test_a_jpeg_of_many_scans_is_refused_before_decoding():
    normal = progressive_jpeg()
    assert 2 <= normal.count(b"\xff\xda") <= 10
    assert decode_image(io.BytesIO(normal), "ok.jpg").size == (64, 64)
    # What follows the picture's end is not counted: a phone's motion photo appends a video
    # (random bytes hold a 0xFFDA pair every 64 KiB), and the file is read as before.
    video = np.random.default_rng(1).integers(0, 256, 10 * 2**20, np.uint8).tobytes()
    assert video.count(b"\xff\xda") > MAX_JPEG_SCANS
    assert decode_image(io.BytesIO(normal + video), "motion.jpg").size == (64, 64)
    with pytest.raises(ValueError, match=rf"^bomb.jpg: a JPEG of more than {MAX_JPEG_SCANS} scans, each a pass"):
        decode_image(io.BytesIO(progressive_jpeg(extra_scans=MAX_JPEG_SCANS)), "bomb.jpg")


def test_a_jpeg_of_many_segments_is_refused_and_its_count_is_quick():
    """Counting scans walked the file in Python: 8 MB of stuffed 0xFF00 bytes in a scan took
    1.5 s, 8 MB of empty comment segments 1.1 s (under `tinycnn serve`'s lock). A regular
    expression now finds each marker, and more than MAX_JPEG_SEGMENTS segments are refused."""
    normal = progressive_jpeg()
    stuffed = normal[:-2] + b"\xff\x00" * 2**22 + b"\xff\xd9"          # in the last scan's data
    assert preprocess._jpeg_work(io.BytesIO(stuffed)) == preprocess._jpeg_work(io.BytesIO(normal))
    comments = normal[:2] + b"\xff\xfe\x00\x02" * (preprocess.MAX_JPEG_SEGMENTS + 1) + normal[2:]
    with pytest.raises(ValueError, match=rf"^many.jpg: a JPEG of more than {preprocess.MAX_JPEG_SEGMENTS:,} "
                                         "segments"):
        decode_image(io.BytesIO(comments), "many.jpg")


def tiff_with_tile(tile, side=100):
    """A side x side deflate TIFF whose one tile is declared tile x tile pixels (254 bytes
    with tile 46336: libtiff allocated the whole tile, 2.1 GB, before failing)."""
    payload = zlib.compress(b"\x80" * 1000)
    entries = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
               (322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(payload))]
    start = 8 + 2 + 12 * len(entries) + 4
    entries[8] = (324, 4, start)
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, value in entries:
        out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    return out + struct.pack("<I", 0) + payload


def test_a_tiff_declaring_a_huge_tile_is_refused_before_decoding():
    with pytest.raises(ValueError, match=r"^tile.tif: its TIFF tiles are 46336x46336 "
                                         r"pixels, larger than the 100x100 picture"):
        decode_image(io.BytesIO(tiff_with_tile(46336)), "tile.tif")
    # a tile larger than a small picture, but of an ordinary size, goes on to the decoder
    with pytest.raises(ValueError, match=r"^small.tif: cannot read this image \((?!its TIFF tiles)"):
        decode_image(io.BytesIO(tiff_with_tile(256)), "small.tif")


def test_a_large_lab_image_gets_the_colour_mode_message():
    """Above WORK_SIDE pixels, the shrinking step converted first and passed on Pillow's own
    'conversion from LAB to RGB not supported'."""
    for width in (100, preprocess.WORK_SIDE + 100):
        buffer = io.BytesIO()
        Image.new("LAB", (width, 20)).save(buffer, "TIFF")
        with pytest.raises(ValueError, match="colour mode LAB is not supported; save the image as RGB"):
            preprocess.to_mnist(decode_image(io.BytesIO(buffer.getvalue()), "lab.tif"))


def test_a_page_of_dots_is_refused_as_noise():
    """Every separate mark is a step of the search for the digit: a 2048x2048 page of dots
    2 px apart (a million marks) took 10 s, holding `tinycnn serve`'s lock."""
    dots = np.full((2048, 2048), 255, np.uint8)
    dots[::2, ::2] = 0
    with pytest.raises(ValueError, match=r"looks like noise or a texture \(1,048,576 separate marks, above "
                                         rf"{preprocess.MAX_PIECES:,}\), not a digit"):
        preprocess.to_mnist(dots)
