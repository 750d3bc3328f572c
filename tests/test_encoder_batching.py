"""Encoders on padded batches as the GPU recipes run them: one pass per batch, a clip's features independent of its
batch, every weight read inside its module's forward (ZeRO-3), and no dense attention bias where none is needed."""
import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tone
from usam.config import BEATsSettings, MERTSettings, WhisperSettings

HUBERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              conv_dim=[16, 16, 16], conv_stride=[5, 8, 8], conv_kernel=[10, 8, 8], num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=4, feat_extract_norm="group", do_stable_layer_norm=False)


def _batch(clips):
    audio = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(c) for c in clips], batch_first=True)
    return audio, torch.tensor([len(c) for c in clips])


def _each_alone_matches_batch(encoder, clips, atol=1e-5):
    with torch.no_grad():
        batched = encoder(*_batch(clips))
        for b, clip in enumerate(clips):
            alone = encoder(*_batch([clip]))
            n = int(alone.mask.sum())
            assert int(batched.mask[b].sum()) == n
            torch.testing.assert_close(batched.features[b, :n], alone.features[0, :n], atol=atol, rtol=1e-4)


def test_mert_group_norm_runs_one_pass_per_batch_and_matches_each_clip_alone():
    from usam.encoders.mert import MERTAudioEncoder

    torch.manual_seed(0)
    enc = MERTAudioEncoder(MERTSettings(architecture=HUBERT)).eval()
    passes = []
    enc.model.register_forward_pre_hook(lambda *_: passes.append(1))
    clips = [tone(1.0, 300), tone(0.37, 500, seed=1), tone(2.0, 800, seed=2)]
    with torch.no_grad():
        enc(*_batch(clips))
    assert len(passes) == 1  # not one HuBERT pass (and resample) per clip
    _each_alone_matches_batch(enc, clips)


def test_mert_pads_clips_shorter_than_its_receptive_field():
    from usam.encoders.mert import MERTAudioEncoder

    enc = MERTAudioEncoder(MERTSettings(architecture=HUBERT)).eval()
    assert enc.receptive_field == 10 + 7 * 5 + 7 * 40
    with torch.no_grad():
        out = enc(*_batch([tone(0.01, seed=3)[:100], tone(0.5, seed=4)]))  # 100 samples at 16 kHz: 150 at 24 kHz
    assert out.mask[0].sum() == 1 and torch.isfinite(out.features).all()


def test_mert_keeps_the_checkpoints_masked_spec_embed(tmp_path):
    from transformers import HubertConfig, HubertModel
    from usam.encoders.mert import MERTAudioEncoder

    torch.manual_seed(0)
    reference = HubertModel(HubertConfig(**HUBERT, mask_time_prob=0.05))
    with torch.no_grad():
        reference.masked_spec_embed.copy_(torch.arange(32.0))
    folder = tmp_path / "mert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**reference.config.to_dict(), "model_type": "mert_model"}))
    torch.save(reference.state_dict(), folder / "pytorch_model.bin")
    enc = MERTAudioEncoder(MERTSettings(name_or_path=str(folder)))
    torch.testing.assert_close(enc.model.masked_spec_embed.detach(), torch.arange(32.0))


def _whisper(true_length: bool):
    from usam.encoders.whisper import WhisperAudioEncoder

    torch.manual_seed(0)
    arch = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
                vocab_size=64)
    return WhisperAudioEncoder(WhisperSettings(architecture=arch, true_length=true_length)).eval()


def test_whisper_true_length_features_do_not_depend_on_the_batch():
    enc = _whisper(true_length=True)
    # the first clip is the longest when alone; beside a longer clip its last frame must not change
    _each_alone_matches_batch(enc, [tone(0.61, 300), tone(1.3, 700, seed=1)])


def _partition_outside_forward(module):
    """ZeRO-3 in miniature: the module's own weights are empty except inside its forward."""
    full = {n: p.data for n, p in module.named_parameters(recurse=False)}

    def gather(mod, _args):
        for n, p in mod.named_parameters(recurse=False):
            p.data = full[n]

    def release(mod, _args, _out):
        for n, p in mod.named_parameters(recurse=False):
            p.data = torch.empty(0, dtype=p.dtype)

    module.register_forward_pre_hook(gather)
    module.register_forward_hook(release)
    release(module, None, None)


def test_whisper_true_length_reads_positions_inside_the_module():
    enc = _whisper(true_length=True)
    audio, lengths = _batch([tone(0.5), tone(0.8, seed=1)])
    with torch.no_grad():
        expected = enc(audio, lengths).features
        for module in enc.encoder.modules():
            _partition_outside_forward(module)
        got = enc(audio, lengths).features
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("padded", [False, True])
def test_beats_without_relative_positions_passes_no_dense_bias(monkeypatch, padded):
    from usam.encoders.beats import BEATsAudioEncoder

    arch = dict(input_patch_size=16, embed_dim=32, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                encoder_attention_heads=2, conv_pos=16, conv_pos_groups=4, relative_position_embedding=False,
                dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    enc = BEATsAudioEncoder(BEATsSettings(architecture=arch)).eval()
    masks = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    clips = [tone(1.0), tone(0.5, seed=1)] if padded else [tone(1.0), tone(1.0, seed=1)]
    with torch.no_grad():
        enc(*_batch(clips))
    assert len(masks) == 2
    if padded:
        assert all(m.dtype == torch.bool and m.shape[1:3] == (1, 1) for m in masks)  # (B, 1, 1, T)
        _each_alone_matches_batch(enc, clips)
    else:
        assert masks == [None, None]
