"""The gradio page on 127.0.0.1, driven with gradio_client: an audio question answered, a second turn, the
expert-usage chart, a new conversation."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from usam.serving.testing import TINY_RATE, free_port, tone


@pytest.fixture(scope="module")
def page(loaded):
    from usam.web import build_demo, launch

    demo = build_demo(*loaded, max_new_tokens=12, max_audio_seconds=5.0)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def texts(chat_messages, role):
    out = []
    for m in chat_messages:
        if m["role"] == role:
            content = m["content"]
            out.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content))
    return out


def test_audio_question_answered_over_two_turns(page, loaded, tmp_path):
    from gradio_client import Client, handle_file

    from usam.chat import USAMChat

    clip = tmp_path / "dog.flac"  # uploaded as it is (no conversion to wav through ffmpeg)
    sf.write(clip, tone(1.0, 440), TINY_RATE, subtype="PCM_24")
    reference = USAMChat(*loaded, max_new_tokens=12)
    first = reference.ask(tone(1.0, 440), "What is said?")
    first_usage = reference.last_expert_usage()
    second = reference.ask(None, "Anything else?")

    client = Client(page, verbose=False)
    chat, chart, question, audio = client.predict(handle_file(str(clip)), "What is said?", api_name="/ask")
    assert texts(chat, "user") == ["🎵 dog.flac", "What is said?"]
    assert [t.strip() for t in texts(chat, "assistant")] == [first] and first
    weights = dict(chart["data"])
    assert list(weights) == [f"expert {i}" for i in range(len(first_usage))]
    np.testing.assert_allclose(list(weights.values()), first_usage, rtol=1e-5)
    assert question == "" and audio is None  # inputs cleared for the next turn

    chat, chart, _, _ = client.predict(None, "Anything else?", api_name="/ask")  # same session: history kept
    assert [t.strip() for t in texts(chat, "assistant")] == [first, second]

    chat, chart, _, _ = client.predict(api_name="/reset")
    assert chat == [] and all(w == 0 for _, w in chart["data"])
    chat, _, _, _ = client.predict(handle_file(str(clip)), "What is said?", api_name="/ask")
    assert [t.strip() for t in texts(chat, "assistant")] == [first]


def test_bad_audio_is_reported_and_the_page_keeps_working(page, tmp_path):
    from gradio_client import Client, handle_file

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnot really audio")
    client = Client(page, verbose=False)
    with pytest.raises(Exception, match="cannot be used.*not_audio"):
        client.predict(handle_file(str(bad)), "What is said?", api_name="/ask")
    long = tmp_path / "long.wav"
    sf.write(long, tone(6.0), TINY_RATE)
    with pytest.raises(Exception, match="too_long"):
        client.predict(handle_file(str(long)), "What is said?", api_name="/ask")
    chat, _, _, _ = client.predict(None, "Hello?", api_name="/ask")
    assert texts(chat, "user") == ["Hello?"]
