"""The GPU recipes' precision path on CPU: the scaled-down usam-8b (configs/model/usam-8b_scaled.yaml) trained
under DeepSpeed's own bf16 engine (`bf16_on_cpu`), on 2 gloo ranks, ZeRO-2 and ZeRO-3, stage 1 then stage 2.
One ZeRO-2 stage-1 run is in the default suite; the rest is slow."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from usam.training.testing import write_corpus

REPO = Path(__file__).resolve().parents[1]
SCALED = "configs/model/usam-8b_scaled.yaml"
Z3_ALL = "deepspeed_overrides={zero_optimization.stage3_param_persistence_threshold: 0}"  # partition every weight


def _launch(out: Path, zero: str, manifest: Path, stage: int, extra=()) -> list[dict]:
    recipe = "configs/train/stage1_tiny.yaml" if stage == 1 else "configs/train/stage2_tiny.yaml"
    overrides = [f"model={SCALED}", f"output_dir={out}", f"data.train=[{manifest}]", "data.valid=[]",
                 "data.bucketing=false", "data.batch_size=2", "schedule.max_steps=2", "logging.log_every=1",
                 "logging.eval_every=0", "logging.save_every=0", "logging.num_generate=0", "bf16_on_cpu=true",
                 f"deepspeed=configs/deepspeed/{zero.split('_')[0]}.json", *([Z3_ALL] if zero == "zero3" else []),
                 *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "train/train.py",
           "--config", recipe, "--no-progress", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(math.isfinite(r[k]) and r[k] > 0 for r in train for k in ("ce", "sacl", "balance"))
    # CTC runs in bf16 too; at 3 tokens/s a byte-level answer is longer than its clip's tokens, so CTC is 0 here
    assert all(math.isfinite(r["ctc"]) and r["ctc"] >= 0 for r in train)
    return train


def _assert_fp32_master_weights(final: Path) -> None:
    """DeepSpeed's bf16 engine held the model in bf16 and the optimiser's masters in fp32: the saved trained
    weights are the fp32 masters, not their bf16 rounding (the next stage rebuilds its masters from them)."""
    weights = load_file(str(final / "usam_weights.safetensors"))
    trained = {k: t for k, t in weights.items() if k.startswith(("sacl.", "projector.", "connector.", "qformer."))
               or "layer_weights" in k}
    assert any(k.startswith("sacl.") for k in trained) and any("layer_weights" in k for k in trained)
    assert {str(t.dtype) for t in trained.values()} == {"torch.float32"}
    # an fp32 master that trained for two steps is not a bf16 value (a saved bf16 copy would be, every element)
    assert any((t != t.to(torch.bfloat16).float()).any() for t in trained.values() if t.is_floating_point())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    # 7 clips in batches of 2 over 2 ranks: the ranks' micro-batches differ in clip count
    return root, write_corpus(root / "data", 7, max_s=1.2)


@pytest.fixture(scope="module")
def stage1_zero2(corpus):
    root, manifest = corpus
    _launch(root / "s1_zero2", "zero2", manifest, 1)
    return root / "s1_zero2"


def test_scaled_config_keeps_usam_8b_kinds_and_options():
    big = yaml.safe_load((REPO / "configs/model/usam-8b.yaml").read_text())
    small = yaml.safe_load((REPO / SCALED).read_text())
    for section, keys in {"mert": ("feat_extract_norm", "do_stable_layer_norm"),
                          "beats": ("deep_norm", "relative_position_embedding", "gru_rel_pos", "layer_norm_first"),
                          "llm": ("model_type", "tie_word_embeddings")}.items():
        for key in keys:
            assert small[section]["architecture"][key] == big[section]["architecture"][key], (section, key)
    for section in ("whisper", "beats", "mert"):
        assert small[section]["train"] == big[section]["train"]
    assert small["mert"]["layer_mix"] == big["mert"]["layer_mix"]
    for key in ("train", "dtype", "gradient_checkpointing"):
        assert small["llm"][key] == big["llm"][key]
    assert small["llm"]["lora"]["targets"] == big["llm"]["lora"]["targets"]
    assert small["projector"]["num_experts"] == big["projector"]["num_experts"]
    assert small["qformer"]["num_layers"] == big["qformer"]["num_layers"]
    assert all(small["loss"][k] > 0 for k in ("lambda_sac", "lambda_bal", "lambda_z", "lambda_ctc"))


def test_bf16_zero2_stage1_two_ranks(stage1_zero2):
    _assert_fp32_master_weights(stage1_zero2 / "final")


@pytest.mark.slow
def test_bf16_zero3_stage1_two_ranks(corpus):
    root, manifest = corpus
    _launch(root / "s1_zero3", "zero3", manifest, 1)
    _assert_fp32_master_weights(root / "s1_zero3" / "final")


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_bf16_stage2_two_ranks(corpus, stage1_zero2, zero):
    root, manifest = corpus
    out = root / f"s2_{zero}"
    _launch(out, zero, manifest, 2, [f"init_from={stage1_zero2 / 'final'}"])
    _assert_fp32_master_weights(out / "final")
    adapter = load_file(str(out / "final" / "llm_adapter" / "adapter_model.safetensors"))
    before = load_file(str(stage1_zero2 / "final" / "llm_adapter" / "adapter_model.safetensors"))
    assert set(adapter) == set(before) and any(("q_proj" in k or "v_proj" in k) for k in adapter)
    assert any(not (adapter[k].float() == before[k].float()).all() for k in adapter)  # the LoRA trained


def test_zero3_keeps_frozen_weights_whole_and_gathers_less_per_step(corpus):
    """ZeRO-3 with every weight partitioned (threshold 0), DeepSpeed's comms logger on. Partitioned, the frozen LLM
    is gathered again at every step; kept whole (zero3_frozen whole, the default) it is gathered once at the
    start, and a step gathers only trained weights. DeepSpeed keeps a gathered weight for reuse within
    stage3_max_reuse_distance (1e9 parameters) and prefetches ahead: usam-8b's 8B frozen weights exceed both, the
    scaled model's 0.25 M do not, so both are scaled down to 0 here, as for the big model."""
    from usam import USAMConfig, USAMModel

    root, manifest = corpus
    logged = "{zero_optimization.stage3_param_persistence_threshold: 0, comms_logger.enabled: true, " \
             "comms_logger.prof_all: true, zero_optimization.stage3_max_reuse_distance: 0, " \
             "zero_optimization.stage3_prefetch_bucket_size: 0}"
    per_step = {}
    for frozen in ("whole", "partitioned"):
        out = root / f"s1_zero3_{frozen}"
        train = _launch(out, "zero3_nothreshold", manifest, 1,
                        [f"deepspeed_overrides={logged}", f"zero3_frozen={frozen}"])
        comm = train[-1]["comm_mb_per_step"]  # step 2: after the first gathers
        per_step[frozen] = sum(mb for op, mb in comm.items() if "all_gather" in op)
    llm = USAMModel(USAMConfig.from_yaml(REPO / SCALED)).llm
    llm_mb = sum(p.numel() for p in llm.parameters()) * 2 / 2**20  # bf16, frozen in stage 1
    print(f"ZeRO-3 all-gathered MB per step, rank 0: {per_step}; the frozen LLM: {llm_mb:.3f} MB")
    assert per_step["partitioned"] - per_step["whole"] >= 0.8 * llm_mb, (per_step, llm_mb)
