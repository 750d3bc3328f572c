import io
import pickle

import numpy as np
import pytest
import soundfile as sf

from usam.data.audio import SAMPLE_RATE, audio_info, load_audio
from usam.errors import DataError


def sine(freq, seconds, sr, channels=1, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()]


def test_resample_stereo_44k_to_16k_mono_keeps_frequency(tmp_path):
    path = tmp_path / "stereo.wav"
    left = sine(440, 2.0, 44100)
    right = sine(440, 2.0, 44100, amp=0.25)
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_24")
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 2 * SAMPLE_RATE) <= 1
    assert abs(peak_hz(x, SAMPLE_RATE) - 440) < 1.0
    # channels are averaged: amplitude (0.5 + 0.25) / 2
    assert abs(np.abs(x[1000:-1000]).max() - 0.375) < 0.01
    assert audio_info(path) == (pytest.approx(2.0), 44100)


def test_flac_ogg_and_bytes(tmp_path):
    x = sine(1000, 1.0, 16000)
    for fmt in ("flac", "ogg", "mp3"):  # mp3: libsndfile >= 1.1 (the venv's soundfile wheel bundles 1.2)
        path = tmp_path / f"a.{fmt}"
        sf.write(path, x, 16000, format=fmt.upper())
        y = load_audio(path)
        assert abs(len(y) - 16000) <= 1 and abs(peak_hz(y, 16000) - 1000) < 2
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV")
    y = load_audio(buf.getvalue())
    np.testing.assert_allclose(y, x, atol=1e-4)


def test_offset_end_segment(tmp_path):
    sr = 8000
    x = np.arange(3 * sr, dtype=np.float32) / (3 * sr)  # a ramp: the value tells the position
    path = tmp_path / "ramp.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    seg = load_audio(path, target_sr=None, offset=1.0, end=2.0)
    assert len(seg) == sr
    np.testing.assert_allclose(seg[[0, -1]], x[[sr, 2 * sr - 1]])
    assert len(load_audio(path, target_sr=16000, offset=0.5)) == 5 * 8000
    with pytest.raises(DataError) as e:
        load_audio(path, offset=3.5)
    assert e.value.reason == "bad_segment"
    with pytest.raises(DataError) as e:
        load_audio(path, offset=1.0, end=4.0)
    assert e.value.reason == "bad_segment"


@pytest.mark.parametrize("case", ["missing_file", "empty_audio", "not_audio", "truncated_wav", "truncated_flac",
                                  "nan_inf", "zero_length", "too_long"])
def test_bad_audio_reasons(tmp_path, case):
    path = tmp_path / "bad.wav"
    good = sine(300, 1.0, 16000)
    expected = case
    if case == "empty_audio":
        path.write_bytes(b"")
    elif case == "not_audio":
        path.write_bytes(b"this is a text file, not audio\n" * 20)
    elif case in ("truncated_wav", "truncated_flac"):
        fmt = case.split("_")[1]
        path = tmp_path / f"bad.{fmt}"
        noise = 0.01 * np.random.default_rng(0).standard_normal(48000).astype(np.float32)
        sf.write(path, sine(300, 3.0, 16000) + noise, 16000)  # noise: FLAC cannot compress it to a few frames
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        expected = "truncated"
    elif case == "nan_inf":
        bad = good.copy()
        bad[100] = np.nan
        bad[200] = np.inf
        sf.write(path, bad, 16000, subtype="FLOAT")
    elif case == "zero_length":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif case == "too_long":
        sf.write(path, good, 16000)
    with pytest.raises(DataError) as e:
        load_audio(path, max_seconds=0.5 if case == "too_long" else None)
    err = e.value
    assert err.reason == expected
    assert str(path) in str(err) and expected in str(err)


def test_data_error_format_and_pickle():
    err = DataError("missing_file", "/x/y.wav does not exist", file="data/train.jsonl", line=12, field="audio")
    assert str(err) == "data/train.jsonl:12: field 'audio': missing_file: /x/y.wav does not exist"
    back = pickle.loads(pickle.dumps(err.with_context(key="k1")))
    assert (back.reason, back.file, back.line, back.key) == ("missing_file", "data/train.jsonl", 12, "k1")
    with pytest.raises(ValueError):
        DataError("no_such_reason", "x")
