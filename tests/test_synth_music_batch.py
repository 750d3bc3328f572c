"""Several pieces rendered in one fluidsynth call, at MERT's 24 kHz, with what the score says frame by frame."""
import random

import numpy as np
import pytest

from usam.synth import music
from usam.synth.tools import find_soundfont

RATE, FRAME_RATE = 24000, 50


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    rng = random.Random(3)
    cfg = {"seconds": (1.5, 2.5), "drums_probability": 1.0}
    pieces = [music.sample_piece(rng, cfg) for _ in range(6)]
    return pieces, music.render_many(pieces, rng, find_soundfont(None), tmp_path_factory.mktemp("music"), RATE)


def test_each_piece_comes_back_as_its_own_clip(rendered):
    pieces, clips = rendered
    assert len(clips) == len(pieces)
    for piece, (clip, score) in zip(pieces, clips):
        assert clip.dtype == np.float32 and clip.size == int((piece.seconds + 0.2) * RATE)
        assert float(np.abs(clip[: int(0.2 * RATE)]).max()) > 1e-3  # the piece starts at the clip's start
        assert score.instruments[0].program == piece.program
        assert min(n.start for i in score.instruments for n in i.notes) < 0.05  # the score from time 0


def test_the_clips_keep_their_band_above_8_khz(rendered):
    for clip, _ in rendered[1]:  # drums in every piece: the hi-hat lives up there
        power = np.abs(np.fft.rfft(clip)) ** 2
        freqs = np.fft.rfftfreq(clip.size, 1 / RATE)
        assert power[freqs > 8000].sum() > 1e-4 * power.sum()


def test_onset_targets_fall_where_the_audio_starts_notes(rendered):
    """The frames the score marks as onsets carry more energy rise than the others (a spectral-flux check)."""
    at_onsets, elsewhere = [], []
    for piece, (clip, score) in zip(*rendered):
        targets = music.frame_targets(score, piece.seconds, FRAME_RATE)
        hop = RATE // FRAME_RATE
        frames = np.stack([clip[i * hop: (i + 1) * hop] for i in range(len(targets["onsets"]))
                           if (i + 1) * hop <= clip.size])
        spectrum = np.log1p(np.abs(np.fft.rfft(frames * np.hanning(hop), axis=1)))
        flux = np.concatenate([[0.0], np.maximum(spectrum[1:] - spectrum[:-1], 0).sum(1)])
        onsets = targets["onsets"][: len(flux)]
        near = onsets | np.roll(onsets, 1)  # the onset frame or the next (attack within a frame)
        at_onsets += flux[near].tolist()
        elsewhere += flux[~near].tolist()
        beats = targets["beats"]
        assert beats.sum() == pytest.approx(piece.seconds * piece.bpm / 60, abs=1)
        assert targets["pitch_classes"].any(1).mean() > 0.8  # something sounds most of the time
    assert np.mean(at_onsets) > 1.5 * np.mean(elsewhere)


def test_too_many_pieces_for_one_call_are_refused(tmp_path):
    rng = random.Random(0)
    pieces = [music.sample_piece(rng, {}) for _ in range(music.MAX_PIECES_PER_CALL + 1)]
    with pytest.raises(ValueError, match="pieces per call"):
        music.render_many(pieces, rng, find_soundfont(None), tmp_path)
