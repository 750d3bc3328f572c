"""generate() takes its settings the transformers way: the model's generation_config, then a GenerationConfig
argument, then keywords; the settings travel with a saved folder."""
import json

import torch
from transformers import GenerationConfig

from conftest import make_tiny_model, tone


def _batch(processor):
    return processor([tone(1.2, 330), tone(2.0, 520, seed=3)], ["Describe the sound.", "What is said?"])


def _end_ids(model):
    return {model.tokenizer.eos_token_id, model.tokenizer.convert_tokens_to_ids("<|im_end|>")}


def test_defaults_are_greedy_with_128_tokens_ending_at_the_chat_end():
    model, _ = make_tiny_model()
    config = model.generation_config
    assert config.do_sample is False and config.max_new_tokens == 128
    assert set(config.eos_token_id) == _end_ids(model) and config.pad_token_id == model.tokenizer.pad_token_id


def test_a_generation_config_argument_is_honoured_and_keywords_win_over_it():
    model, processor = make_tiny_model()
    batch = _batch(processor)
    with torch.no_grad():
        greedy = model.generate(**batch, max_new_tokens=6)
        short = model.generate(**batch, generation_config=GenerationConfig(max_new_tokens=3))
        longer = model.generate(**batch, generation_config=GenerationConfig(max_new_tokens=3), max_new_tokens=6)
        sampled = []
        for _ in range(2):
            torch.manual_seed(7)
            sampled.append(model.generate(**batch, generation_config=GenerationConfig(
                do_sample=True, temperature=50.0, max_new_tokens=6)))
    assert short.shape[1] == 3 and short.tolist() == greedy[:, :3].tolist()
    assert longer.tolist() == greedy.tolist()
    assert sampled[0].tolist() == sampled[1].tolist()  # seeded sampling repeats
    assert sampled[0].tolist() != greedy.tolist()  # and is sampling: at temperature 50 it leaves the greedy path
    assert model.generation_config.max_new_tokens == 128 and model.generation_config.do_sample is False


def test_eos_and_pad_token_ids_are_accepted():
    model, processor = make_tiny_model()
    batch = _batch(processor)
    with torch.no_grad():
        greedy = model.generate(**batch, max_new_tokens=6)
        stop = int(greedy[0, 1])  # the second token row 0 writes greedily
        pad = model.tokenizer.convert_tokens_to_ids("<|im_start|>")
        stopped = model.generate(**batch, max_new_tokens=6, eos_token_id=stop, pad_token_id=pad)
    row = stopped[0].tolist()
    end = row.index(stop)
    assert end <= 1 and row[: end + 1] == greedy[0, : end + 1].tolist()
    assert set(row[end + 1:]) <= {pad}


def test_return_dict_in_generate_gives_the_sequences_and_scores():
    model, processor = make_tiny_model()
    batch = _batch(processor)
    with torch.no_grad():
        ids = model.generate(**batch, max_new_tokens=4)
        out = model.generate(**batch, max_new_tokens=4, return_dict_in_generate=True, output_scores=True)
    assert out.sequences.tolist() == ids.tolist() and len(out.scores) == ids.shape[1]


def test_the_settings_travel_with_a_saved_folder(tmp_path):
    from usam import USAMModel

    model, processor = make_tiny_model()
    model.generation_config.max_new_tokens = 5
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 5 and saved["do_sample"] is False
    loaded = USAMModel.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert loaded.generate(**_batch(processor)).shape[1] <= 5
    (tmp_path / "m" / "generation_config.json").unlink()  # a folder saved before the file existed
    assert USAMModel.from_pretrained(tmp_path / "m").generation_config.max_new_tokens == 128
