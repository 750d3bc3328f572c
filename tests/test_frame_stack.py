"""qformer.kind="frame_stack": each window's frames concatenated in order and normalised, with no learned layer."""
import pytest
import torch

from conftest import make_tiny_model, tone
from usam.config import QFormerSettings
from usam.qformer import FrameStack, WindowQFormer, build_window_connector


def test_frame_stack_concatenates_each_windows_frames_in_order():
    torch.manual_seed(0)
    stack = FrameStack(input_dim=3, window_frames=4, stride_frames=4)
    frames = torch.randn(2, 12, 3)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 6:] = False  # second clip: 6 valid frames -> 2 windows, the last one half valid
    tokens, token_mask = stack(frames, mask)
    assert tokens.shape == (2, 3, 12) and token_mask.tolist() == [[True] * 3, [True, True, False]]
    norm = torch.nn.functional.layer_norm
    torch.testing.assert_close(tokens[0, 1], norm(frames[0, 4:8].flatten(), (12,)))
    half = torch.cat([frames[1, 4:6].flatten(), torch.zeros(6)])  # the padded frames count as zeros
    torch.testing.assert_close(tokens[1, 1], norm(half, (12,)))
    assert tokens[1, 2].abs().sum() == 0  # no valid frame: masked out
    swapped = frames.clone()
    swapped[0, [0, 1]] = frames[0, [1, 0]]
    assert (stack(swapped, mask)[0][0, 0] - tokens[0, 0]).abs().max() > 1e-3  # order matters, unlike a mean


def test_frame_stack_ignores_padding_content_and_overlaps_with_a_shorter_stride():
    stack = FrameStack(input_dim=3, window_frames=4, stride_frames=2)
    frames = torch.randn(1, 6, 3)
    short, _ = stack(frames, torch.ones(1, 6, dtype=torch.bool))
    padded = torch.cat([frames, 5 * torch.randn(1, 3, 3)], dim=1)
    tokens, token_mask = stack(padded, torch.tensor([[True] * 6 + [False] * 3]))
    assert token_mask.tolist() == [[True, True, True]]  # windows start at frames 0, 2, 4
    torch.testing.assert_close(tokens, short)
    norm = torch.nn.functional.layer_norm
    torch.testing.assert_close(tokens[0, 1], norm(frames[0, 2:6].flatten(), (12,)))
    torch.testing.assert_close(tokens[0, 2], norm(torch.cat([frames[0, 4:6].flatten(), torch.zeros(6)]), (12,)))


def test_connector_kind_is_chosen_by_config_and_checked():
    assert isinstance(build_window_connector(QFormerSettings(kind="frame_stack"), 8, 5, 5), FrameStack)
    assert isinstance(build_window_connector(QFormerSettings(hidden_size=16, num_heads=2), 8, 5, 5), WindowQFormer)
    with pytest.raises(ValueError, match="qformer.kind.*'frame_stack'.*'attention'"):
        QFormerSettings(kind="attention")
    with pytest.raises(ValueError, match="qformer.num_queries must be 1 with kind 'frame_stack'"):
        QFormerSettings(kind="frame_stack", num_queries=2)


def test_frame_stack_model_trains_and_round_trips(tmp_path):
    from usam import USAMModel, USAMProcessor

    model, processor = make_tiny_model(**{"qformer.kind": "frame_stack"})
    frames_per_window = model.config.window_frames
    input_dim = sum(enc.output_dim for enc in model.encoders.values())
    assert model.projector.experts[0][0].in_features == frames_per_window * input_dim
    batch = processor([tone(1.3), tone(2.1, 300, seed=1)], ["Describe the sound."] * 2, ["a tone", "a lower tone"])
    model.train()
    model(**batch).loss.backward()
    assert model.qformer.norm.weight.grad.abs().sum() > 0 and model.projector.experts[0][0].weight.grad.abs().sum() > 0
    model.eval()
    model.save_pretrained(tmp_path / "m")
    loaded = USAMModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.qformer.kind == "frame_stack"
    with torch.no_grad():
        batch = USAMProcessor.from_pretrained(tmp_path / "m")([tone(1.3)], ["Describe the sound."])
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_stream_norm_normalises_each_encoders_stack_on_its_own():
    """With qformer.stream_norm, each encoder's frames are stacked and normalised apart: scaling one encoder's
    features by 100 leaves every token unchanged (the joint norm lets it set the other encoder's scale)."""
    torch.manual_seed(0)
    joint = build_window_connector(QFormerSettings(kind="frame_stack"), 5, 2, 2, [3, 2])
    apart = build_window_connector(QFormerSettings(kind="frame_stack", stream_norm=True), 5, 2, 2, [3, 2])
    frames = torch.randn(1, 4, 5)
    mask = torch.ones(1, 4, dtype=torch.bool)
    tokens, _ = apart(frames, mask)
    norm = torch.nn.functional.layer_norm
    torch.testing.assert_close(tokens[0, 0], torch.cat([norm(frames[0, :2, :3].flatten(), (6,)),
                                                        norm(frames[0, :2, 3:].flatten(), (4,))]))
    louder = frames.clone()
    louder[..., 3:] *= 100
    torch.testing.assert_close(apart(louder, mask)[0], tokens, atol=1e-4, rtol=1e-4)  # up to LayerNorm eps
    assert (joint(louder, mask)[0][..., :6] - joint(frames, mask)[0][..., :6]).abs().max() > 0.1
    one = build_window_connector(QFormerSettings(kind="frame_stack", stream_norm=True), 5, 2, 2, [5])
    assert [n for n, _ in one.named_parameters()] == ["norm.weight", "norm.bias"]  # one encoder: the joint norm
    with pytest.raises(ValueError, match="do not add up"):
        FrameStack(5, 2, 2, [3, 3])


def test_added_streams_can_start_silent_and_learn_their_share():
    """added_stream_scale 0: the tokens start as the first encoder's stack alone (the others' part is zero), and the
    added encoders' gains get a gradient, so training can turn them up."""
    torch.manual_seed(0)
    settings = QFormerSettings(kind="frame_stack", stream_norm=True, added_stream_scale=0.0)
    stack = build_window_connector(settings, 5, 2, 2, [3, 2])
    frames = torch.randn(1, 4, 5)
    mask = torch.ones(1, 4, dtype=torch.bool)
    tokens, _ = stack(frames, mask)
    assert tokens[..., 6:].abs().max() == 0 and tokens[..., :6].abs().max() > 0.5
    (tokens * torch.randn_like(tokens)).sum().backward()
    assert stack.norms[1].weight.grad.abs().max() > 0 and stack.norms[0].weight.grad.abs().max() > 0
