"""Front ends against reference implementations; checkpoints in the official layouts load strictly."""
import json

import numpy as np
import pytest
import torch

from conftest import tone
from usam.config import BEATsSettings, MERTSettings, WhisperSettings


def test_whisper_log_mel_matches_feature_extractor():
    from transformers import WhisperFeatureExtractor
    from usam.features import WHISPER_CHUNK_SAMPLES, whisper_log_mel, whisper_mel_filters

    fe = WhisperFeatureExtractor(feature_size=80)
    clips = [tone(1.7, 440), tone(4.2, 1300, seed=1), tone(0.3, 200, seed=2)]
    reference = fe(clips, sampling_rate=16000, return_tensors="np").input_features
    padded = torch.stack([torch.nn.functional.pad(torch.from_numpy(c), (0, WHISPER_CHUNK_SAMPLES - len(c))) for c in clips])
    ours = whisper_log_mel(padded, whisper_mel_filters(80)).numpy()
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_kaldi_fbank_matches_kaldi_native_fbank():
    # kaldi-native-fbank refuses 128 bins at 16 kHz (Kaldi's empty-filter check; torchaudio, which BEATs used,
    # does not check), so the same code is compared at 80 bins.
    import kaldi_native_fbank as knf
    from usam.features import kaldi_fbank, kaldi_mel_banks

    wave = tone(1.234, 700) * 2 ** 15
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, wave.tolist())
    fbank.input_finished()
    reference = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])
    ours, valid = kaldi_fbank(torch.from_numpy(wave)[None], kaldi_mel_banks(80))
    assert ours.shape[1] == reference.shape[0] == int(valid[0])
    np.testing.assert_allclose(ours[0].numpy(), reference, atol=2e-3, rtol=1e-4)


def test_whisper_encoder_loads_only_the_encoder_from_a_checkpoint_folder(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from usam.encoders.whisper import WhisperAudioEncoder

    torch.manual_seed(0)
    config = WhisperConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    full = WhisperForConditionalGeneration(config).eval()
    full.save_pretrained(tmp_path / "whisper")
    enc = WhisperAudioEncoder(WhisperSettings(name_or_path=str(tmp_path / "whisper"))).eval()
    assert enc.pretrained and not hasattr(enc, "decoder")
    clip = tone(2.0)
    from transformers import WhisperFeatureExtractor
    mel = WhisperFeatureExtractor(feature_size=80)([clip], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        reference = full.model.encoder(mel).last_hidden_state[0, :100]
        ours = enc(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
    assert ours.features.shape[1] == 100
    torch.testing.assert_close(ours.features[0], reference, atol=1e-4, rtol=1e-4)


def test_whisper_true_length_path_is_close_to_padded():
    from usam.encoders.whisper import WhisperAudioEncoder

    arch = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, vocab_size=64,
                pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(0)
    padded = WhisperAudioEncoder(WhisperSettings(architecture=arch)).eval()
    exact = WhisperAudioEncoder(WhisperSettings(architecture=arch, true_length=True)).eval()
    exact.load_state_dict(padded.state_dict())
    clips = [tone(1.0), tone(2.5, 800, seed=1)]
    audio = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(c) for c in clips], batch_first=True)
    lengths = torch.tensor([len(c) for c in clips])
    with torch.no_grad():
        a, b = padded(audio, lengths), exact(audio, lengths)
    assert torch.equal(a.mask, b.mask)
    # same frames; attention no longer sees the 30 s of padding, so values move, but stay correlated
    cos = torch.nn.functional.cosine_similarity(a.features[a.mask], b.features[b.mask], dim=-1)
    assert float(cos.mean()) > 0.9


def _tiny_beats_cfg():
    return dict(input_patch_size=16, embed_dim=32, encoder_layers=2, encoder_embed_dim=48, encoder_ffn_embed_dim=64,
                encoder_attention_heads=2, conv_pos=16, conv_pos_groups=4, relative_position_embedding=True,
                num_buckets=32, max_distance=64, gru_rel_pos=True, deep_norm=True, finetuned_model=True,
                predictor_class=5)


def test_beats_official_checkpoint_loads_strictly(tmp_path):
    from usam.encoders.beats import BEATsArchitecture, BEATsAudioEncoder, BEATsModel

    torch.manual_seed(0)
    source = BEATsModel(BEATsArchitecture.from_dict(_tiny_beats_cfg()))
    state = source.state_dict()
    # the official module tree's names, including the shared bias table under every layer
    for key in ("encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v", "encoder.layers.1.self_attn.relative_attention_bias.weight",
                "encoder.layers.0.self_attn.grep_a", "post_extract_proj.weight", "predictor.weight", "patch_embedding.weight"):
        assert key in state, key
    path = tmp_path / "BEATs_iter3_plus_AS2M.pt"
    torch.save({"cfg": _tiny_beats_cfg(), "model": state}, path)
    enc = BEATsAudioEncoder(BEATsSettings(name_or_path=str(path))).eval()
    for key, value in state.items():
        assert torch.equal(enc.model.state_dict()[key], value)
    clip = tone(2.0)
    out = enc(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
    assert out.features.shape == (1, 13, 48)  # ceil(198 fbank frames / 16) steps, 8 frequency tokens pooled
    assert enc.frame_rate == pytest.approx(6.25)


def test_beats_checkpoint_with_a_wrong_key_names_it(tmp_path):
    from usam.encoders.beats import BEATsArchitecture, BEATsAudioEncoder, BEATsModel

    state = BEATsModel(BEATsArchitecture.from_dict(_tiny_beats_cfg())).state_dict()
    state["encoder.layers.0.fc3.weight"] = state.pop("encoder.layers.0.fc1.weight")
    path = tmp_path / "bad.pt"
    torch.save({"cfg": _tiny_beats_cfg(), "model": state}, path)
    with pytest.raises(KeyError, match=r"encoder\.layers\.0\.fc1\.weight.*encoder\.layers\.0\.fc3\.weight"):
        BEATsAudioEncoder(BEATsSettings(name_or_path=str(path)))
    torch.save({"model": state}, tmp_path / "nocfg.pt")
    with pytest.raises(ValueError, match="cfg"):
        BEATsAudioEncoder(BEATsSettings(name_or_path=str(tmp_path / "nocfg.pt")))


def test_beats_pools_frequency_tokens_of_each_time_step():
    from usam.encoders.beats import BEATsArchitecture, BEATsModel

    torch.manual_seed(0)
    model = BEATsModel(BEATsArchitecture.from_dict({**_tiny_beats_cfg(), "finetuned_model": False})).eval()
    fbank = torch.randn(1, 64, 128)  # 4 time steps of 16 frames, 128 bins -> 8 frequency patches
    tokens, step_padding = model(fbank, torch.zeros(1, 64, dtype=torch.bool))
    assert tokens.shape == (1, 32, 48) and step_padding.shape == (1, 4)
    # time-major order: changing the last time step's frames changes only... the tokens 24..31 before the encoder
    with torch.no_grad():
        x = model.patch_embedding(fbank.unsqueeze(1)).permute(0, 2, 3, 1).reshape(1, 32, -1)
        fbank2 = fbank.clone()
        fbank2[:, 48:] += 1.0
        x2 = model.patch_embedding(fbank2.unsqueeze(1)).permute(0, 2, 3, 1).reshape(1, 32, -1)
    changed = (x - x2).abs().sum(-1)[0] > 0
    assert changed[24:].all() and not changed[:24].any()


def _tiny_hubert_config():
    from transformers import HubertConfig

    return HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        conv_dim=[16, 16, 16], conv_stride=[5, 8, 8], conv_kernel=[10, 8, 8],
                        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="group")


def test_mert_checkpoint_folder_maps_onto_hubert(tmp_path):
    from transformers import HubertModel
    from usam.encoders.mert import MERTAudioEncoder

    torch.manual_seed(0)
    reference = HubertModel(_tiny_hubert_config()).eval()
    folder = tmp_path / "MERT-v1-tiny"
    folder.mkdir()
    raw = reference.config.to_dict()
    raw.update(model_type="mert_model", architectures=["MERTModel"], feature_extractor_cqt=False, deepnorm=False,
               attention_relax=-1.0, conv_pos_batch_norm=False)
    (folder / "config.json").write_text(json.dumps(raw))
    state = {}
    for key, value in reference.state_dict().items():  # the old weight_norm names, as MERT's files have them
        key = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        state[key] = value
    torch.save(state, folder / "pytorch_model.bin")
    enc = MERTAudioEncoder(MERTSettings(name_or_path=str(folder), layer_mix=False)).eval()
    assert enc.pretrained and enc.group_norm is not None and enc.frame_rate == 75.0
    clip = tone(1.0)
    import julius
    wave = julius.resample_frac(torch.from_numpy(clip), 16000, 24000)
    wave = (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
    with torch.no_grad():
        expected = reference(wave[None]).last_hidden_state
        ours = enc(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
    assert ours.features.shape[1] == expected.shape[1] == 74
    torch.testing.assert_close(ours.features, expected, atol=1e-5, rtol=1e-5)

    (folder / "config.json").write_text(json.dumps({**raw, "feature_extractor_cqt": True}))
    with pytest.raises(ValueError, match="feature_extractor_cqt"):
        MERTAudioEncoder(MERTSettings(name_or_path=str(folder)))
    (folder / "config.json").write_text(json.dumps(raw))
    state["encoder.layers.0.attention.extra.weight"] = torch.zeros(1)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(KeyError, match="encoder.layers.0.attention.extra.weight"):
        MERTAudioEncoder(MERTSettings(name_or_path=str(folder)))


def test_mert_layer_mix_is_a_softmax_over_hidden_states():
    from usam.encoders.mert import MERTAudioEncoder

    enc = MERTAudioEncoder(MERTSettings(architecture=_tiny_hubert_config().to_dict())).eval()
    assert enc.layer_weights.shape == (3,)
    with torch.no_grad():
        enc.layer_weights.copy_(torch.tensor([0.0, 0.0, 50.0]))  # all weight on the last state
        mixed = enc(torch.from_numpy(tone(1.0))[None], torch.tensor([16000]))
        enc.layer_weights = None
        last = enc(torch.from_numpy(tone(1.0))[None], torch.tensor([16000]))
    torch.testing.assert_close(mixed.features, last.features, atol=1e-5, rtol=1e-5)
