"""The sound encoder warm-up: a tiny BEATs trained on fresh synthetic sound events names the class and finds where
sounds are active and where events start, on clips it never heard and on the held-out timbres; its checkpoint loads
as an official BEATs file."""
import json

import numpy as np
import pytest
import torch

from usam.warmup import SoundWarmupSettings, warm_up_sound_encoder
from usam.warmup.sound import FreshSounds

TINY_BEATS = {"input_patch_size": 16, "embed_dim": 64, "encoder_layers": 1, "encoder_embed_dim": 64,
              "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4, "conv_pos": 8, "conv_pos_groups": 4,
              "dropout": 0.0, "attention_dropout": 0.0}
CLASSES = ["beep", "dog bark", "knock", "siren"]


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    settings = SoundWarmupSettings(architecture=TINY_BEATS, steps=60, batch_size=16, lr=2e-3, warmup_steps=5,
                                   classes=CLASSES, held_out_timbres=["beep", "dog bark"], eval_every=30,
                                   eval_clips=32, seed=0)
    out = tmp_path_factory.mktemp("warmup") / "beats"
    encoder, curve = warm_up_sound_encoder(settings, out, progress=False)
    return encoder, curve, out


def test_a_warmed_tiny_beats_names_sounds_and_finds_them_on_fresh_clips(warmed):
    """60 steps (about 30 s here). At 90 steps the same recipe reached 100% class accuracy in-domain and 91% on
    held-out timbres, active frames 93% and onsets 85% balanced accuracy (2-core AMD EPYC, 2026-12-06)."""
    _, curve, _ = warmed
    first, last = curve[0], curve[-1]
    assert [row["step"] for row in curve] == [0, 30, 60]
    assert first["seen/class_accuracy"] < 50  # four classes: the heads start by guessing
    assert last["seen/class_accuracy"] >= 85 and last["held_out/class_accuracy"] >= 65, last
    assert last["seen/active_balanced_accuracy"] >= first["seen/active_balanced_accuracy"] + 25, (first, last)
    assert last["seen/onset_balanced_accuracy"] >= first["seen/onset_balanced_accuracy"] + 15, (first, last)


def test_the_warmed_encoder_loads_as_an_official_beats_checkpoint(warmed):
    from usam.config import BEATsSettings
    from usam.encoders.beats import BEATsAudioEncoder

    encoder, curve, out = warmed
    assert json.loads((out / "curve.json").read_text()) == curve
    loaded = BEATsAudioEncoder(BEATsSettings(name_or_path=str(out / "BEATs.pt"))).eval()
    audio = torch.randn(2, 32000) * 0.1
    lengths = torch.tensor([32000, 20000])
    with torch.no_grad():
        a, b = encoder(audio, lengths), loaded(audio, lengths)
    torch.testing.assert_close(a.features[a.mask], b.features[b.mask])


def test_fresh_sound_targets_follow_the_audio():
    """Active frames carry the clip's energy; onset frames are where counted events start; held-out streams draw
    only held-out timbres of the classes asked for."""
    import random

    settings = SoundWarmupSettings(architecture=TINY_BEATS, classes=CLASSES)
    batch = FreshSounds(settings, 6.25).batch(random.Random(0), 24)
    hop = 2560
    for b in range(24):
        steps = int(batch["lengths"][b]) // hop
        energy = batch["audio"][b, : steps * hop].reshape(steps, hop).pow(2).mean(1)
        active = batch["frames"][b, :steps, 0] > 0.5
        assert active.any()
        if not active.all():
            assert energy[active].mean() > 100 * energy[~active].mean()
        onsets = batch["frames"][b, :steps, 1] > 0.5
        if batch["counted"][b]:
            assert onsets.any() and bool(active[onsets].all())
        else:
            assert not onsets.any()
    held = FreshSounds(settings, 6.25, held_out=["beep", "dog bark"]).batch(random.Random(1), 4)
    assert [CLASSES[i] for i in held["cls"]] == ["beep", "dog bark", "beep", "dog bark"]
    assert np.isfinite(batch["audio"].numpy()).all()
