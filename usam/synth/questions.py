"""Questions (several phrasings) and short answers of one fixed format per question type.

Answers are exact-match targets: lower case, no final full stop, numbers as digits for counts.
"""
from __future__ import annotations

import random

QUESTIONS = {
    "instrument": ("Which instrument is playing? Answer with the instrument only.",
                   "What instrument plays this music? Answer with the instrument only."),
    "tempo": ("Is the tempo slow, medium or fast?",
              "How fast is this music: slow, medium or fast?"),
    "mode": ("Is the music in a major or a minor key?",
             "Is this piece major or minor?"),
    "drums": ("Are there drums in this music? Answer yes or no.",
              "Can you hear drums? Answer yes or no."),
    "count": ("How many times does the sound occur? Answer with a number.",
              "How many separate sound events are there? Answer with a number."),
    "speech_and_music": ("What is said, and is there music in the background?",
                         "Transcribe the speech and say whether music plays behind it."),
    "background": ("Besides the speech, what is in the background: music, rain, engine hum or noise?",
                   "What sound is behind the voice: music, rain, engine hum or noise?"),
}
QTYPES = tuple(QUESTIONS)


def question(qtype: str, rng: random.Random) -> str:
    return rng.choice(QUESTIONS[qtype])


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def speech_and_music_answer(transcript: str, has_music: bool) -> str:
    """'<transcript without final punctuation>; yes, there is music' (or '; no, there is no music')."""
    said = transcript.rstrip(".?!")
    return f"{said}; yes, there is music" if has_music else f"{said}; no, there is no music"
