"""USAMChat on a tiny saved model: multi-turn history, several clips, streaming, reset, expert usage, inputs."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from usam.chat import USAMChat, load_clip
from usam.errors import DataError
from usam.serving.testing import encode, tone


def greedy(model, processor, conversation, n=12):
    return processor.batch_decode(model.generate(**processor.apply_chat([conversation]), max_new_tokens=n))[0]


def test_multi_turn_keeps_audio_and_answers_in_context(loaded):
    model, processor = loaded
    chat = USAMChat(model, processor, max_new_tokens=12)
    wave = tone(1.0, 440)
    a1 = chat.ask(wave, "What is said?")
    a2 = chat.ask(None, "And is there music?")
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": wave}, {"type": "text", "text": "What is said?"}]},
                    {"role": "assistant", "content": a1},
                    {"role": "user", "content": [{"type": "text", "text": "And is there music?"}]}]
    assert a1 == greedy(model, processor, conversation[:1])
    assert a2 == greedy(model, processor, conversation)
    assert len(chat.messages) == 4 and chat.num_clips == 1


def test_several_clips_attach_then_ask(loaded, tmp_path):
    model, processor = loaded
    first, second = tone(0.8, 300, seed=1), tone(0.5, 1200, seed=2)
    path = tmp_path / "second.flac"
    sf.write(path, second, processor.sampling_rate)
    chat = USAMChat(model, processor, max_new_tokens=10)
    chat.attach(first)
    chat.attach(str(path))
    answer = chat.ask(None, "Compare the clips.")
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": first}, {"type": "audio", "audio": second},
                                                 {"type": "text", "text": "Compare the clips."}]}]
    assert answer == greedy(model, processor, conversation, 10)
    assert chat.num_clips == 2 and chat.pending == []


def test_streaming_yields_pieces_that_join_to_the_answer(loaded):
    model, processor = loaded
    plain = USAMChat(model, processor, max_new_tokens=16).ask(tone(1.0), "Describe it.")
    chat = USAMChat(model, processor, max_new_tokens=16)
    pieces = list(chat.ask(tone(1.0), "Describe it.", stream=True))
    assert len(pieces) > 1 and "".join(pieces).strip() == plain
    assert chat.messages[-1] == {"role": "assistant", "content": plain}


def test_closing_a_stream_early_leaves_history_unchanged(loaded):
    model, processor = loaded
    chat = USAMChat(model, processor, max_new_tokens=64)
    stream = chat.ask(tone(1.0), "Describe it.", stream=True)
    next(stream)
    stream.close()
    assert chat.messages == [] and len(chat.pending) == 1  # the clip waits for the next question
    assert chat.ask(None, "Describe it.", max_new_tokens=8)


def test_reset_and_expert_usage(loaded):
    model, processor = loaded
    chat = USAMChat(model, processor, max_new_tokens=6)
    assert chat.last_expert_usage() is None
    first = chat.ask(tone(1.0, 440), "What is said?")
    usage = chat.last_expert_usage()
    assert usage.shape == (model.config.projector.num_experts,)
    np.testing.assert_allclose(usage.sum(), 1.0, rtol=1e-5)
    batch = processor.apply_chat([[{"role": "user", "content": [{"type": "audio", "audio": tone(1.0, 440)},
                                                                {"type": "text", "text": "What is said?"}]}]])
    np.testing.assert_allclose(usage, model(**batch).routing_weights.mean(0).detach().numpy(), rtol=1e-5)
    chat.ask(None, "More?")
    assert chat.last_expert_usage() is not None
    chat.reset()
    assert chat.messages == [] and chat.last_expert_usage() is None
    assert chat.ask(tone(1.0, 440), "What is said?") == first  # nothing left of the earlier turns
    text_only = USAMChat(model, processor, max_new_tokens=4)
    text_only.ask(None, "Hello?")
    assert text_only.last_expert_usage() is None


def test_audio_inputs_path_bytes_arrays_and_rates(tmp_path):
    wave = tone(1.0, 440, rate=16000)
    path = tmp_path / "a.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_clip(str(path)), wave, atol=1e-6)  # the default rate: 16 kHz
    np.testing.assert_allclose(load_clip(encode(wave, "FLAC", rate=16000)), wave, atol=1e-4)
    np.testing.assert_array_equal(load_clip(wave), wave)
    pcm = (tone(1.0, 440, rate=48000) * 32767).astype(np.int16)
    resampled = load_clip((48000, np.stack([pcm, pcm], axis=1)))  # gradio's (rate, int16 (n, channels))
    assert resampled.dtype == np.float32 and abs(len(resampled) - 16000) <= 1
    assert abs(float(np.abs(resampled).max()) - 0.3) < 0.02
    with pytest.raises(DataError) as info:
        load_clip(encode(tone(2.0)), max_seconds=1.0, rate=24000)
    assert info.value.reason == "too_long"
    with pytest.raises(DataError) as info:
        load_clip(str(tmp_path / "missing.wav"))
    assert info.value.reason == "missing_file"
    with pytest.raises(ValueError):
        load_clip(np.zeros((2, 2, 2), np.float32))
