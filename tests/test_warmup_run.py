"""`usam warmup`: configs load with the demo corpus's held-out programs and timbres, bad configs name the file and
field, and a finished warm-up is reused only for the same settings."""
from pathlib import Path

import pytest
import yaml

from usam.cli import main
from usam.warmup.run import DONE_MARKER, load_warmup_config, run_warmup

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "warmup").glob("*.yaml"))
TINY = {"encoder": "beats", "steps": 2, "batch_size": 4, "eval_every": 2, "eval_clips": 4, "lr": 1e-3,
        "warmup_steps": 1, "classes": ["beep", "knock"], "held_out_timbres": ["beep"],
        "architecture": {"input_patch_size": 16, "embed_dim": 32, "encoder_layers": 1, "encoder_embed_dim": 32,
                         "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2, "conv_pos": 8,
                         "conv_pos_groups": 2}}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_warmup_config_loads_and_holds_out_what_the_demo_corpus_does(path):
    synth = yaml.safe_load((REPO / "configs/synth/default.yaml").read_text())
    kind, settings = load_warmup_config(path)
    if kind == "mert":
        assert sorted(settings.held_out_programs) == sorted(synth["music"]["held_out_programs"])
    else:
        assert sorted(settings.held_out_timbres) == sorted(synth["sound"]["held_out_timbres"])


def test_a_bad_config_names_the_file_and_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "stepz": 3}))
    with pytest.raises(ValueError, match=r"bad\.yaml.*stepz"):
        load_warmup_config(bad)
    bad.write_text(yaml.safe_dump({**TINY, "encoder": "whisper"}))
    with pytest.raises(ValueError, match=r"bad\.yaml.*encoder must be one of mert, beats"):
        load_warmup_config(bad)


def test_a_finished_warmup_is_reused_only_for_the_same_settings(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "beats"
    assert main(["warmup", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'BEATs.pt'}" in printed and "held_out/class_accuracy" in printed
    stamp = (out / "BEATs.pt").stat().st_mtime_ns
    path, curve, reused = run_warmup(config, out, progress=False)
    assert reused and path == out / "BEATs.pt" and (out / "BEATs.pt").stat().st_mtime_ns == stamp
    assert [row["step"] for row in curve] == [0, 2]
    _, curve, reused = run_warmup(config, out, {"steps": 4}, progress=False)  # other settings: trained again
    assert not reused and [row["step"] for row in curve] == [0, 2, 4]
    _, _, reused = run_warmup(config, out, {"steps": 4}, force=True, progress=False)
    assert not reused and (out / DONE_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind
