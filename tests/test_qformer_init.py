"""Q-Former query_init="window_mean": an untrained Q-Former is window mean pooling (then learns attention)."""
import pytest
import torch

from usam.config import QFormerSettings
from usam.qformer import WindowQFormer


def _qformer(init: str) -> WindowQFormer:
    torch.manual_seed(0)
    settings = QFormerSettings(hidden_size=16, num_heads=2, ffn_size=32, num_layers=2, dropout=0.0, query_init=init)
    return WindowQFormer(settings, input_dim=8, window_frames=4, stride_frames=4).eval()


def test_untrained_window_mean_qformer_is_mean_pooling():
    q = _qformer("window_mean")
    frames = torch.randn(2, 12, 8)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 6:] = False  # second clip: 6 valid frames -> 2 windows, the last one half valid
    tokens, token_mask = q(frames, mask)
    assert tokens.shape == (2, 3, 16) and token_mask.tolist() == [[True] * 3, [True, True, False]]
    with torch.no_grad():
        x = q.input_proj(frames)
        for b, n_valid in ((0, 12), (1, 6)):
            for w in range((n_valid + 3) // 4):
                frames_w = x[b, 4 * w: min(4 * w + 4, n_valid)]
                expected = q.norm(q.queries[0] + frames_w.mean(0))
                torch.testing.assert_close(tokens[b, w], expected, rtol=1e-5, atol=1e-5)
    assert tokens[1, 2].abs().sum() == 0  # the empty window is masked out


def test_window_mean_tokens_differ_by_window_and_learned_ones_barely_do():
    torch.manual_seed(1)
    # a common component (as Whisper's features have) plus content that changes from window to window
    frames = 2.0 * torch.randn(1, 1, 8) + torch.randn(1, 10, 8).repeat_interleave(4, dim=1)
    mask = torch.ones(1, 40, dtype=torch.bool)

    def mean_cosine(init):
        tokens, _ = _qformer(init)(frames, mask)
        t = torch.nn.functional.normalize(tokens[0], dim=-1)
        sim = t @ t.T
        return sim[~torch.eye(len(t), dtype=torch.bool)].mean().item()

    assert mean_cosine("window_mean") < mean_cosine("learned") - 0.1


def test_window_mean_layers_still_train():
    q = _qformer("window_mean").train()
    tokens, _ = q(torch.randn(1, 8, 8), torch.ones(1, 8, dtype=torch.bool))
    tokens.pow(2).sum().backward()
    assert q.layers[0].multihead_attn.out_proj.weight.grad.abs().sum() > 0
    assert q.layers[0].linear2.weight.grad.abs().sum() > 0


def test_unknown_query_init_is_named():
    with pytest.raises(ValueError, match="query_init.*'mean'"):
        QFormerSettings(query_init="mean")
