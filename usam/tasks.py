"""Task names and instruction phrasings.

Each task has several phrasings, drawn at random in training, and one fixed phrasing for evaluation,
so that benchmark numbers are reproducible. A sample may carry its own instruction instead.
"""
from __future__ import annotations

import random

# asr: transcribe speech; s2tt: translate speech; aac: caption a sound; mc: caption music;
# cls: classify (speech, sound or music labels); qa: free-form question answering.
TASKS = ("asr", "s2tt", "aac", "mc", "cls", "qa")
# how a cls item is answered in evaluation: a generated answer mapped onto the label set, or the best-scoring label
CLS_MODES = ("generate", "rank")
EVAL_DTYPES = ("auto", "float32", "bfloat16", "float16")  # `usam eval --dtype` (auto: the LLM's own dtype)

TRAIN_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        "Transcribe the speech.",
        "Write down what is said in the audio.",
        "Recognize the speech and give the transcript.",
        "What does the speaker say? Give the exact words.",
    ),
    "s2tt": (
        "Translate the speech into {lang}.",
        "Listen and give the {lang} translation of what is said.",
        "Render the spoken words in {lang}.",
    ),
    "aac": (
        "Describe the sound.",
        "Write a short caption for this audio.",
        "What can be heard in this recording? Answer in one sentence.",
    ),
    "mc": (
        "Describe the music.",
        "Write a short caption for this piece of music.",
        "Describe the instruments, tempo and mood of this music.",
    ),
    "cls": (
        "Classify the audio. Answer with the label only.",
        "Which class does this audio belong to? Answer with the label only.",
    ),
    "qa": ("{question}",),
}

EVAL_INSTRUCTIONS: dict[str, str] = {
    "asr": "Transcribe the speech.",
    "s2tt": "Translate the speech into {lang}.",
    "aac": "Describe the sound.",
    "mc": "Describe the music.",
    "cls": "Classify the audio. Answer with the label only.",
    "qa": "{question}",
}

LANGUAGE_NAMES = {"zh": "Chinese", "de": "German", "fr": "French", "es": "Spanish", "ja": "Japanese", "en": "English"}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return task


def instruction_for(task: str, *, train: bool, rng: random.Random | None = None, lang: str | None = None,
                    question: str | None = None) -> str:
    """The instruction for a sample that has none of its own (a random phrasing in training)."""
    check_task(task)
    template = rng.choice(TRAIN_INSTRUCTIONS[task]) if train and rng is not None else EVAL_INSTRUCTIONS[task]
    if "{question}" in template and not question:
        raise ValueError(f"task {task!r} needs an explicit instruction (the question)")
    return template.format(lang=LANGUAGE_NAMES.get(lang or "zh", lang or "Chinese"), question=question or "")
