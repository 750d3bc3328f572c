"""Robust audio loading: soundfile (libsndfile) decodes, soxr resamples, channels are averaged to mono.

Every way a file can be bad ends in a `usam.errors.DataError` with a stable reason code, never in a
libsndfile traceback or in silently wrong audio.
"""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np

from usam.errors import DataError

from usam import SAMPLE_RATE  # the project's reference rate


def _describe(source) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes in memory>"
    return str(source)


def _open_target(source):
    """What soundfile should open: a path string or a BytesIO over in-memory bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    return str(source)


def _check_exists(source) -> None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise DataError("empty_audio", "the in-memory audio has zero bytes", field="audio")
        return
    path = Path(source)
    if not path.exists():
        raise DataError("missing_file", f"{path} does not exist", file=str(path), field="audio")
    if path.is_dir():
        raise DataError("not_audio", f"{path} is a folder, not an audio file", file=str(path), field="audio")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DataError("unreadable", f"{path}: {err}", file=str(path), field="audio") from None
    if size == 0:
        raise DataError("empty_audio", f"{path} has zero bytes", file=str(path), field="audio")


def _riff_shortfall(source) -> int | None:
    """For a RIFF/WAVE file: bytes missing from the 'data' chunk (0 if complete), None if not a WAV.

    Hand-written because libsndfile silently shortens a WAV whose data chunk is cut off (it reports the
    frames that happen to be present), so a half-written file would otherwise pass as a shorter clip.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        total = len(data)
        head = data[:1 << 16]
    else:
        total = os.path.getsize(source)
        with open(source, "rb") as f:
            head = f.read(1 << 16)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk_id, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if chunk_id == b"data":
            if size in (0, 0xFFFFFFFF):  # streaming writers leave the size unset: nothing to compare
                return 0
            return max(0, pos + 8 + size - total)
        pos += 8 + size + (size & 1)  # chunks are word aligned
    return 0  # header longer than 64 KiB or no data chunk: let libsndfile judge


def audio_info(source) -> tuple[float, int]:
    """(duration in seconds, sample rate) from the file header, without decoding the samples.

    A WAV whose data chunk is shorter than its header says raises `truncated` here already; other
    formats show truncation only when decoded (load_audio)."""
    import soundfile as sf

    _check_exists(source)
    name = _describe(source)
    try:
        info = sf.info(_open_target(source))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise DataError("not_audio", f"{name}: libsndfile cannot read it ({err})", file=name,
                        field="audio") from None
    if info.samplerate <= 0:
        raise DataError("not_audio", f"{name}: header gives sample rate {info.samplerate}", file=name, field="audio")
    try:
        shortfall = _riff_shortfall(source)
    except OSError as err:
        raise DataError("unreadable", f"{name}: {err}", file=name, field="audio") from None
    if shortfall:
        raise DataError("truncated", f"{name}: WAV data chunk is {shortfall} bytes short of its header size",
                        file=name, field="audio")
    return info.frames / info.samplerate, int(info.samplerate)


def load_audio(source, target_sr: int | None = SAMPLE_RATE, offset: float = 0.0, end: float | None = None,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode `source` (a path, or the encoded bytes of a file) to float32 mono at `target_sr`.

    offset/end (seconds) select a segment of the file; end=None means to the end of the file.
    max_seconds rejects (reason too_long) audio whose selected segment is longer, before decoding it.
    target_sr=None keeps the file's own rate (for checks that need no resampling). Returns (n,) float32.
    """
    import soundfile as sf
    import soxr

    name = _describe(source)
    duration, sr = audio_info(source)  # raises missing_file / empty_audio / not_audio / truncated (WAV)
    if offset < 0 or (end is not None and end <= offset):
        raise DataError("bad_segment", f"{name}: segment offset={offset} end={end} is empty or negative",
                        file=name, field="audio")
    total_frames = int(round(duration * sr))
    if total_frames == 0:
        raise DataError("zero_length", f"{name}: the file holds no samples", file=name, field="audio")
    start = int(round(offset * sr))
    stop = total_frames if end is None else int(round(end * sr))
    # A segment may overrun the end by a rounding hair (manifests store rounded times): allow 10 ms.
    if start >= total_frames or stop > total_frames + int(0.01 * sr):
        raise DataError("bad_segment", f"{name}: segment {offset:.3f}-{end} s lies outside the file "
                        f"({duration:.3f} s)", file=name, field="audio")
    stop = min(stop, total_frames)
    seconds = (stop - start) / sr
    if max_seconds is not None and seconds > max_seconds:
        raise DataError("too_long", f"{name}: {seconds:.2f} s is longer than the maximum {max_seconds:g} s",
                        file=name, field="audio")
    try:
        samples = sf.read(_open_target(source), start=start, stop=stop, dtype="float32", always_2d=True)[0]
    except (sf.LibsndfileError, RuntimeError) as err:
        # e.g. "flac decoder lost sync": the stream ends or breaks before the frames the header promises
        raise DataError("truncated", f"{name}: decoding failed after the header was read ({err})",
                        file=name, field="audio") from None
    if samples.shape[0] < stop - start:
        raise DataError("truncated", f"{name}: decoded {samples.shape[0]} of the {stop - start} frames the "
                        f"header announces", file=name, field="audio")
    if samples.shape[0] == 0:
        raise DataError("zero_length", f"{name}: the selected segment holds no samples", file=name, field="audio")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]  # (n,)
    if not np.isfinite(mono).all():
        bad = int((~np.isfinite(mono)).sum())
        raise DataError("nan_inf", f"{name}: {bad} samples are NaN or infinite", file=name, field="audio")
    if target_sr is not None and sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr, quality="HQ")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if mono.shape[0] == 0:  # a handful of samples can vanish when downsampling
        raise DataError("zero_length", f"{name}: no samples left after resampling {sr} -> {target_sr} Hz",
                        file=name, field="audio")
    return mono
