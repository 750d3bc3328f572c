"""Rhythm features of the frame stack (qformer.rhythm_s): the local tempogram peaks at the beat period, does not
depend on what the clip is batched with, and reaches every token."""
import pytest
import torch

from usam.config import QFormerSettings
from usam.qformer import FrameStack, build_window_connector
from usam.rhythm import local_tempogram


def beat_frames(period: int, length: int = 300, dim: int = 6, seed: int = 0) -> torch.Tensor:
    """(length, dim) frames whose features jump at every `period`-th frame, as an encoder's do at note onsets."""
    g = torch.Generator().manual_seed(seed)
    frames = 0.05 * torch.randn(length, dim, generator=g)
    frames[::period] += 1.0
    return frames


def test_the_local_tempogram_peaks_at_the_beat_period_everywhere_in_the_clip():
    lags = 60
    for period in (18, 25, 40):
        frames = beat_frames(period)
        tempogram = local_tempogram(frames[None], torch.ones(1, 300, dtype=torch.bool), lags)[0]  # (T, L)
        assert tempogram.shape == (300, lags)
        for t in (70, 150, 230):  # lag L sits at index L - 1; no shorter lag comes close
            assert tempogram[t, period - 1] > 0.5 > tempogram[t, : period - 1].max(), (period, t)


def test_a_clip_gives_the_same_tempogram_alone_and_batched_with_a_longer_one():
    short, long = beat_frames(20, length=180), beat_frames(33, length=300, seed=1)
    frames = torch.zeros(2, 300, 6)
    frames[0, :180], frames[1] = short, long
    mask = torch.zeros(2, 300, dtype=torch.bool)
    mask[0, :180], mask[1] = True, True
    frames[0, 180:] = 7.0  # whatever the padding holds
    batched = local_tempogram(frames, mask, 50)
    alone = local_tempogram(short[None], torch.ones(1, 180, dtype=torch.bool), 50)[0]
    torch.testing.assert_close(batched[0, :180], alone)
    assert batched[0, 180:].abs().max() == 0


def test_every_frame_stack_token_carries_the_tempogram_of_its_window():
    torch.manual_seed(0)
    stack = FrameStack(input_dim=6, window_frames=5, stride_frames=5, rhythm_lags=50)
    assert stack.output_dim == 5 * 6 + 50
    frames = torch.stack([beat_frames(20), beat_frames(40)])
    mask = torch.ones(2, 300, dtype=torch.bool)
    mask[1, 200:] = False
    tokens, token_mask = stack(frames, mask)
    assert tokens.shape == (2, 60, 80) and token_mask[1].sum() == 40
    assert tokens[1, 40:].abs().max() == 0  # windows past the clip are empty
    rhythm = tokens[..., 30:]  # the tokens' rhythm part (layer-normalised): peaks at each clip's own period
    middle = rhythm[:, 10:30].mean(1)
    assert middle[0].argmax() == 20 - 1 and middle[1].argmax() == 40 - 1
    without = FrameStack(input_dim=6, window_frames=5, stride_frames=5)
    torch.testing.assert_close(tokens[..., :30], without(frames, mask)[0])  # the stacked frames unchanged
    # with an encoder's stack normalised apart (stream_norm), the rhythm part comes after every encoder's
    streams = FrameStack(input_dim=6, window_frames=5, stride_frames=5, stream_dims=[4, 2], rhythm_lags=50)
    torch.testing.assert_close(streams(frames, mask)[0][..., 30:], rhythm)


def test_rhythm_s_needs_the_frame_stack_and_sets_the_lags_from_the_frame_rate():
    with pytest.raises(ValueError, match="rhythm_s"):
        QFormerSettings(rhythm_s=2.0)  # the Q-Former
    with pytest.raises(ValueError, match="rhythm_s"):
        QFormerSettings(kind="frame_stack", rhythm_s=-1.0)
    from usam.config import USAMConfig

    config = USAMConfig.from_yaml("configs/model/demo.yaml")
    config.qformer.rhythm_s = 2.0
    assert config.align.rate_hz == 50.0 and config.rhythm_lags == 100
    connector = build_window_connector(config.qformer, 384, config.window_frames, config.stride_frames,
                                       rhythm_lags=config.rhythm_lags)
    assert connector.output_dim == 5 * 384 + 100
