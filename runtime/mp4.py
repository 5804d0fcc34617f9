"""MP4 files the runtime reads and writes: odd frame sizes (`set_frame_size`) and the frames a file declares
(`sample_count`: how a written file is checked before it is renamed into place, and how a truncated source is
told from one that ended).

Odd frame sizes in MPEG-4 Part 2 MP4 files.

OpenCV's FFmpeg writer truncates odd widths and heights to even ones (`width &= -2` in cap_ffmpeg_impl.hpp),
so a 127x255 video would come out 126x254. `runtime.video.VideoWriter` therefore encodes frames padded to
even sizes, and `set_frame_size` then declares the true size where decoders read it: the track header
(`tkhd`), the sample entry (`mp4v` in `stsd`) and the Video Object Layer header in its `esds` (whose
`video_object_layer_width/height` are fixed 13-bit fields). The macroblock grid is the same for both sizes
(a multiple of 16 is even), so the bitstream decodes unchanged and decoders crop to the declared size.
Every field is patched in place: no byte moves.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

CONTAINERS = ("moov", "trak", "mdia", "minf", "stbl")
VISUAL_SAMPLE_ENTRY = 86  # bytes before a visual sample entry's child boxes (ISO 14496-12 12.1.3)


def set_frame_size(path: str | Path, height: int, width: int) -> None:
    """Declare `height` x `width` in an `mp4v` MP4 written by OpenCV (padded by at most one row/column)."""
    data = bytearray(Path(path).read_bytes())
    found = _patch(data, 0, len(data), height, width)
    if found < 2:
        raise ValueError(f"no mp4v track header and sample entry in {path}")
    Path(path).write_bytes(bytes(data))


def sample_count(path: str | Path, whole: bool = True) -> int | None:
    """The samples (frames) of the first video track of an ISO base media file (MP4, MOV), read from its sample
    table, or None when `path` is not one. With `whole`, also None when the file is not whole: a box runs past
    its end, or a chunk starts beyond it (how a written file is checked); without, the count a file cut short
    still declares (its `moov` read in full). Reads the box headers and `moov` only."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            moov = None
            pos = 0
            while pos + 8 <= size:
                f.seek(pos)
                head = f.read(16)
                length, kind = struct.unpack(">I4s", head[:8])
                if length == 1 and len(head) == 16:
                    length = struct.unpack(">Q", head[8:16])[0]
                elif length == 0:
                    length = size - pos
                if length < 8 or (pos == 0 and kind != b"ftyp"):
                    return None
                if pos + length > size:
                    if whole or kind == b"moov":
                        return None
                    break
                if kind == b"moov":
                    f.seek(pos)
                    moov = bytearray(f.read(length))
                pos += length
    except OSError:
        return None
    if moov is None:
        return None
    tables = _video_tables(moov, 8, len(moov))
    if tables is None:
        return None
    count, last_chunk = tables
    return count if last_chunk < size or not whole else None


def _video_tables(data: bytearray, start: int, end: int) -> tuple[int, int] | None:
    """(sample count, offset of the last chunk) of the first track below `data[start:end]` with an `stsz`."""
    found: dict[str, int] = {}
    for kind, pos, header, size in _boxes(data, start, end):
        if kind in CONTAINERS:
            tables = _video_tables(data, pos + header, pos + size)
            if tables is not None:
                return tables
        elif kind == "stsz" and size >= header + 12:
            found["count"] = struct.unpack(">I", data[pos + header + 8 : pos + header + 12])[0]
        elif kind in ("stco", "co64") and size >= header + 8:
            entries = struct.unpack(">I", data[pos + header + 4 : pos + header + 8])[0]
            width = 4 if kind == "stco" else 8
            last = pos + header + 8 + (entries - 1) * width
            if entries == 0:
                found["last"] = 0
            elif last + width <= pos + size:
                found["last"] = int.from_bytes(data[last : last + width], "big")
    if "count" in found and "last" in found:
        return found["count"], found["last"]
    return None


def _boxes(data: bytearray, start: int, end: int) -> Iterator[tuple[str, int, int, int]]:
    """(type, offset, header size, box size) of the boxes in `data[start:end]`."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind.decode("latin-1"), pos, header, size
        pos += size


def _patch(data: bytearray, start: int, end: int, height: int, width: int) -> int:
    """Patch every video track below `data[start:end]`; returns how many fields were set."""
    found = 0
    for kind, pos, header, size in _boxes(data, start, end):
        if kind in CONTAINERS:
            found += _patch(data, pos + header, pos + size, height, width)
        elif kind == "tkhd" and struct.unpack(">II", data[pos + size - 8 : pos + size]) != (0, 0):
            data[pos + size - 8 : pos + size] = struct.pack(">II", width << 16, height << 16)  # 16.16 fixed point
            found += 1
        elif kind == "stsd":
            entry = pos + header + 8  # version/flags, entry count
            entry_size, entry_kind = struct.unpack(">I4s", data[entry : entry + 8])
            if entry_kind == b"mp4v":
                data[entry + 32 : entry + 36] = struct.pack(">HH", width, height)
                _patch_vol(data, entry + VISUAL_SAMPLE_ENTRY, entry + entry_size, height, width)
                found += 1
    return found


class _Bits:
    """A big-endian bit cursor over a bytearray."""

    def __init__(self, data: bytearray, byte: int) -> None:
        self.data, self.bit = data, byte * 8

    def read(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | ((self.data[self.bit // 8] >> (7 - self.bit % 8)) & 1)
            self.bit += 1
        return value

    def write(self, count: int, value: int) -> None:
        for i in range(count):
            mask = 1 << (7 - self.bit % 8)
            if (value >> (count - 1 - i)) & 1:
                self.data[self.bit // 8] |= mask
            else:
                self.data[self.bit // 8] &= ~mask & 0xFF
            self.bit += 1


def _patch_vol(data: bytearray, start: int, end: int, height: int, width: int) -> None:
    """Set `video_object_layer_width/height` of the first VOL header in `data[start:end]` (ISO 14496-2 6.2.3)."""
    pos = start
    while True:
        pos = data.find(b"\x00\x00\x01", pos, end)
        if pos < 0 or pos + 4 > end:
            raise ValueError("no MPEG-4 Video Object Layer header in the mp4v sample entry")
        if 0x20 <= data[pos + 3] <= 0x2F:
            break
        pos += 3
    bits = _Bits(data, pos + 4)
    bits.read(9)  # random_accessible_vol, video_object_type_indication
    verid = 1
    if bits.read(1):  # is_object_layer_identifier
        verid = bits.read(4)
        bits.read(3)
    if bits.read(4) == 0xF:  # aspect_ratio_info: extended PAR
        bits.read(16)
    if bits.read(1):  # vol_control_parameters
        bits.read(3)  # chroma_format, low_delay
        if bits.read(1):  # vbv_parameters
            bits.read(79)
    shape = bits.read(2)
    if shape == 3 and verid != 1:
        bits.read(4)
    bits.read(1)
    resolution = bits.read(16)
    bits.read(1)
    if bits.read(1):  # fixed_vop_rate
        bits.read(max(1, (resolution - 1).bit_length()))
    if shape != 0:
        raise ValueError("the Video Object Layer is not rectangular")
    bits.read(1)
    bits.write(13, width)
    bits.read(1)
    bits.write(13, height)
