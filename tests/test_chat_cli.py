"""`usam chat` driven through a pseudo-terminal (pexpect), and its one-shot --question mode."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pexpect
import pytest
import soundfile as sf

from usam.commands.chat import printable
from usam.serving.testing import TINY_RATE, tone


@pytest.fixture(scope="module")
def expected(tiny_model_dir):
    """Greedy answers of the same model in this process: first turn, second turn, first turn after /reset."""
    from usam.chat import USAMChat

    chat = USAMChat.from_pretrained(tiny_model_dir, max_new_tokens=12)
    first = chat.ask(tone(1.0, 440), "What is said?")
    second = chat.ask(None, "Anything else?")
    chat.reset()
    text_only = chat.ask(None, "Anything else?")
    return first, second, text_only


def test_interactive_chat_through_a_terminal(tiny_model_dir, expected, tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0, 440), TINY_RATE, subtype="FLOAT")
    env = dict(os.environ, OMP_NUM_THREADS="1", TERM="dumb")
    child = pexpect.spawn(sys.executable, ["-m", "usam.cli", "chat", tiny_model_dir, "--max-new-tokens", "12"],
                          env=env, encoding="utf-8", timeout=120, dimensions=(40, 400))
    try:
        child.expect_exact("you> ")
        child.sendline(f"/audio {clip}")
        child.expect(r"\[attached .*clip\.wav: 1\.00 s; clips in the conversation: 1\]")
        child.expect_exact("you> ")
        child.sendline("What is said?")
        child.expect_exact("usam> ")
        child.expect_exact("you> ")
        answer = child.before.replace("\r", "").strip("\n")
        assert answer.strip() == printable(expected[0])
        child.sendline("Anything else?")  # second turn: the clip and the first answer are still in context
        child.expect_exact("usam> ")
        child.expect_exact("you> ")
        assert child.before.replace("\r", "").strip() == printable(expected[1])
        child.sendline("/reset")
        child.expect_exact("[conversation cleared]")
        child.expect_exact("you> ")
        child.sendline("Anything else?")
        child.expect_exact("usam> ")
        child.expect_exact("you> ")
        assert child.before.replace("\r", "").strip() == printable(expected[2])
        child.sendline("/audio /no/such/file.wav")
        child.expect(re.escape("error: /no/such/file.wav") + ".*missing_file")
        child.expect_exact("you> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_streaming_is_visible_in_the_terminal(tiny_model_dir, expected, tmp_path):
    """The answer arrives in several writes (tokens as they are generated), not in one block."""
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0, 440), TINY_RATE, subtype="FLOAT")
    env = dict(os.environ, OMP_NUM_THREADS="1", TERM="dumb")
    child = pexpect.spawn(sys.executable, ["-m", "usam.cli", "chat", tiny_model_dir, "--max-new-tokens", "64",
                                           "--audio", str(clip)], env=env, encoding="utf-8", timeout=120)
    try:
        child.expect_exact("you> ")
        child.sendline("What is said?")
        child.expect_exact("usam> ")
        reads = []
        while not "".join(reads).endswith("you> "):
            reads.append(child.read_nonblocking(4096, timeout=60))
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    answer = "".join(reads).replace("\r", "")[:-len("you> ")].strip()
    assert answer.startswith(printable(expected[0]))  # greedy: the 12-token answer begins the 64-token one
    assert len(reads) > 1


def test_question_mode_answers_once_and_exits(tiny_model_dir, expected, tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0, 440), TINY_RATE, subtype="FLOAT")
    out = subprocess.run([sys.executable, "-m", "usam.cli", "chat", tiny_model_dir, "--audio", str(clip),
                          "--question", "What is said?", "--max-new-tokens", "12"], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == printable(expected[0])
    bad = subprocess.run([sys.executable, "-m", "usam.cli", "chat", tiny_model_dir, "--audio", str(tmp_path / "x.wav"),
                          "--question", "?"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "missing_file" in bad.stderr


def test_printable_strips_terminal_controls():
    assert printable("a\x1b[2Jb\x07c\nd\te") == "a\ufffd[2Jb\ufffdc\nd\te"


@pytest.mark.parametrize("command, options", [
    ("chat", ["--audio", "--question", "--max-new-tokens", "--temperature", "/audio PATH", "/reset", "/quit"]),
    ("serve", ["--host", "--port", "--api-key", "USAM_API_KEY", "--max-audio-seconds", "--max-body-mb",
               "--batch-window-ms", "--max-batch", "--max-queue", "--model-name"]),
    ("web", ["--host", "--port", "127.0.0.1", "--max-new-tokens"]),
])
def test_help_explains_every_option(command, options, capsys):
    from usam.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text
