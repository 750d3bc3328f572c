"""The model's input rate: music reaches MERT at 24 kHz, full-band; Whisper and BEATs still hear 16 kHz."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import make_tiny_model


def _band_energy_above(wave: np.ndarray, rate: int, hz: float, below: float = np.inf) -> float:
    """Fraction of the clip's spectral energy between `hz` and `below`."""
    power = np.abs(np.fft.rfft(wave - wave.mean())) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / rate)
    return float(power[(freqs > hz) & (freqs < below)].sum() / power.sum())


def _mert_input(model, batch) -> np.ndarray:
    """The waveform the MERT network itself receives (after the encoder's resampling and normalisation)."""
    seen = []
    hook = model.encoders["mert"].model.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model.encode_audio(batch["audio"], batch["audio_lengths"])
    finally:
        hook.remove()
    return seen[0][0].float().numpy()


def _train_batch(tmp_path, model, processor, wav: np.ndarray, rate: int, pass_processor: bool = False):
    """One clip through the training data path (manifest -> TrainData's dataset -> Collator)."""
    from usam.training.collate import Collator
    from usam.training.data import TrainData
    from usam.training.testing import tiny_train_config

    tmp_path.mkdir(parents=True, exist_ok=True)
    sf.write(tmp_path / "tone.wav", wav, rate, subtype="FLOAT")
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"key": "k0", "audio": str(tmp_path / "tone.wav"), "task": "mc",
                                    "text": "a high tone", "duration": len(wav) / rate}) + "\n")
    cfg = tiny_train_config(tmp_path / "run", manifest)
    # without a processor, TrainData decodes at the rate of the config's model (the tiny one: 24 kHz)
    data = TrainData(cfg, Collator(processor), rank=0, world=1, processor=processor if pass_processor else None)
    return data.collate([data.dataset(0)[0]]).batch


def test_input_rate_follows_the_enabled_encoders():
    model, processor = make_tiny_model()
    assert model.config.input_sample_rate == processor.sampling_rate == 24000  # MERT-v1 is enabled
    whisper_only, _ = make_tiny_model(**{"beats.enabled": False, "mert.enabled": False})
    assert whisper_only.config.input_sample_rate == 16000
    forced, _ = make_tiny_model(**{"align.input_sample_rate": 16000})
    assert forced.config.input_sample_rate == 16000
    # a second of audio is 50 frames on the common axis at either rate
    assert model.config.num_frames(24000) == forced.config.num_frames(16000) == 50
    assert model.config.num_audio_tokens(24000) == forced.config.num_audio_tokens(16000)
    with pytest.raises(ValueError, match="align.input_sample_rate"):
        make_tiny_model(**{"align.input_sample_rate": 100})


def test_a_10_khz_tone_reaches_mert_through_the_training_data_path(tmp_path):
    """A 48 kHz file holding a 10 kHz tone: MERT's input keeps its energy (before: decoded to 16 kHz, whose
    Nyquist is 8 kHz, then upsampled, so MERT received nothing above 8 kHz)."""
    rate = 48000
    t = np.arange(rate) / rate
    wav = (0.3 * np.sin(2 * np.pi * 10000 * t)).astype(np.float32)
    model, processor = make_tiny_model()
    batch = _train_batch(tmp_path, model, processor, wav, rate)
    assert batch["audio_lengths"].tolist() == [24000]
    mert_in = _mert_input(model, batch)
    assert _band_energy_above(mert_in[:24000], 24000, 9900, 10100) > 0.95
    # the same path with the old 16 kHz input: the tone is gone before MERT (what is left is the resamplers'
    # residue, scaled up by MERT's per-clip normalisation)
    old, old_processor = make_tiny_model(**{"align.input_sample_rate": 16000})
    batch = _train_batch(tmp_path / "old", old, old_processor, wav, rate, pass_processor=True)
    assert batch["audio_lengths"].tolist() == [16000]
    assert _band_energy_above(_mert_input(old, batch)[:24000], 24000, 9900, 10100) < 0.05  # measured 0.005


def test_whisper_and_beats_hear_the_same_clip_at_either_input_rate():
    """A 24 kHz input is resampled to 16 kHz inside Whisper and BEATs: their features match those of the same
    sound given at 16 kHz (same weights), frame for frame, and a clip's features do not depend on its batch."""
    at24, _ = make_tiny_model()
    at16, _ = make_tiny_model(**{"align.input_sample_rate": 16000})

    def sound(rate, seconds):
        t = np.arange(int(seconds * rate)) / rate
        return torch.from_numpy((0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1300 * t))
                                .astype(np.float32))

    with torch.no_grad():
        for name in ("whisper", "beats"):
            a = at24.encoders[name](sound(24000, 1.0)[None], torch.tensor([24000]))
            b = at16.encoders[name](sound(16000, 1.0)[None], torch.tensor([16000]))
            assert a.mask.tolist() == b.mask.tolist(), name
            cos = torch.nn.functional.cosine_similarity(a.features[a.mask], b.features[b.mask], dim=-1)
            assert float(cos.min()) > 0.99, (name, float(cos.min()))
            # batched with a longer clip: the shorter clip's features are unchanged
            long = sound(24000, 1.7)
            pair = torch.stack([torch.nn.functional.pad(sound(24000, 1.0), (0, len(long) - 24000)), long])
            both = at24.encoders[name](pair, torch.tensor([24000, len(long)]))
            n = int(a.mask.sum())
            assert torch.allclose(both.features[0, :n], a.features[0, :n], atol=1e-4), name


def test_a_feature_cache_refuses_features_computed_at_another_input_rate():
    at24, _ = make_tiny_model()
    at16, _ = make_tiny_model(**{"align.input_sample_rate": 16000})
    for name in ("whisper", "beats", "mert"):  # same weights, different audio reaching the network
        assert at24.encoder_fingerprint(name) != at16.encoder_fingerprint(name), name
    whisper_only, _ = make_tiny_model(**{"beats.enabled": False, "mert.enabled": False})
    assert whisper_only.encoder_fingerprint("whisper") == at16.encoder_fingerprint("whisper")


def test_chat_and_server_decode_clips_at_the_model_rate(tmp_path):
    from usam.chat import USAMChat
    from usam.serving.app import _decode_audio

    model, processor = make_tiny_model()
    t = np.arange(44100) / 44100
    path = tmp_path / "clip.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 9000 * t)).astype(np.float32), 44100)
    chat = USAMChat(model, processor)
    clip = chat.attach(str(path))
    assert len(clip) == 24000 and chat.sampling_rate == 24000
    assert _band_energy_above(clip, 24000, 8000) > 0.95
    assert len(chat.attach((48000, np.zeros(48000, dtype=np.float32)))) == 24000  # (rate, array) as gradio gives
    import base64

    decoded = _decode_audio(base64.b64encode(path.read_bytes()).decode(), "messages[0]", 60.0, 24000)
    assert len(decoded) == 24000


def test_the_processor_refuses_audio_said_to_be_at_another_rate():
    model, processor = make_tiny_model()
    wave = np.zeros(24000, dtype=np.float32)
    with pytest.raises(ValueError, match="at 16000 Hz but this model reads 24000 Hz"):
        processor([wave], ["Describe."], sampling_rate=16000)
    with pytest.raises(ValueError, match="sampling_rate"):
        processor.apply_chat([[{"role": "user", "content": [{"type": "audio", "audio": wave}]}]], sampling_rate=16000)
    batch = processor([wave], ["Describe."], sampling_rate=24000)
    assert batch["audio_lengths"].tolist() == [24000]
