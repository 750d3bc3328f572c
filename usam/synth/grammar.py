"""A parallel English/Chinese template grammar of everyday sentences.

Each template is a pair (English, Chinese) with the same named slots; each slot is filled from a list of
(English, Chinese) phrases (`SLOTS`), so the Chinese sentence is a correct translation by construction.
Numbers are written as they are spoken ("twenty five" / 二十五).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

from usam.synth import lexicon as lx
from usam.synth.numbers import clock_times, en_number, en_ordinal, years, zh_count, zh_number

Phrase = tuple[str, str]  # (english, chinese)


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _counted(nouns, counts) -> list[Phrase]:
    """'three apples' / 三个苹果 for every noun and count."""
    out = []
    for sg, pl, zh, mw in nouns:
        for n in counts:
            out.append((f"{en_number(n)} {sg if n == 1 else pl}", f"{zh_count(n)}{mw}{zh}"))
    return out


def _build_slots() -> dict[str, list[Phrase]]:
    subjects = lx.NAMES + lx.RELATIVES
    things = lx.FOODS + lx.OBJECTS
    return {
        "subj": subjects,
        "subj2": subjects,
        "name": lx.NAMES,
        "the_place": [(f"the {en}", zh) for en, zh in lx.PLACES],
        "a_place": [(_article(en), zh) for en, zh in lx.PLACES],
        "city": lx.CITIES,
        "past": lx.PAST_TIMES,
        "future": lx.FUTURE_TIMES,
        "day": lx.DAYS,
        "food_n": _counted(lx.FOODS, range(1, 13)),
        "thing_n": _counted(things, range(1, 21)),
        "animal_n": _counted(lx.ANIMALS, range(1, 16)),
        "people_n": _counted(lx.PEOPLE, range(2, 41)),
        "thing_sg": [(sg, f"{mw}{zh}") for sg, _pl, zh, mw in lx.OBJECTS],
        "object_sg": [(sg, zh) for sg, _pl, zh, _mw in lx.OBJECTS],
        "colour": lx.COLOURS,
        "garment": lx.GARMENTS,
        "event": lx.EVENTS,
        "vehicle": lx.VEHICLES,
        "activity": lx.ACTIVITIES,
        "request": lx.REQUESTS,
        "sport": lx.SPORTS,
        "weather": lx.WEATHER,
        "feeling": lx.FEELINGS,
        "furniture": lx.FURNITURE,
        "clock": clock_times(),
        "year": years(),
        "month": lx.MONTHS,
        "date": [(f"the {en_ordinal(d)} of {m_en}", f"{m_zh}{zh_number(d)}号")
                 for m_en, m_zh in lx.MONTHS for d in range(1, 29)],
        "floor": [(en_ordinal(n), zh_number(n)) for n in range(1, 31)],
        "degrees": [(en_number(n), zh_number(n)) for n in range(2, 41)],
        "age": [(en_number(n), zh_count(n)) for n in range(3, 96)],
        "price": [(en_number(n), zh_count(n)) for n in range(2, 100)],
        "minutes": [(en_number(n), zh_count(n)) for n in range(2, 60)],
        "hours": [(en_number(n), zh_count(n)) for n in range(2, 10)],
        "pages": [(en_number(n), zh_count(n)) for n in range(10, 100)],
        "room": [(en_number(n), zh_number(n)) for n in range(1, 61)],
        "bus": [(en_number(n), zh_number(n)) for n in range(1, 100)],
    }


# (English, Chinese); a slot used twice in one template gets the same phrase.
TEMPLATES: list[Phrase] = [
    ("{subj} went to {the_place} {past}.", "{subj}{past}去了{the_place}。"),
    ("{subj} bought {food_n} at {the_place} {past}.", "{subj}{past}在{the_place}买了{food_n}。"),
    ("I saw {animal_n} in the park {past}.", "我{past}在公园里看到了{animal_n}。"),
    ("There are {thing_n} on the {furniture}.", "{furniture}上有{thing_n}。"),
    ("{subj} will visit {city} {future}.", "{subj}{future}会去{city}。"),
    ("The {event} starts at {clock}.", "{event}{clock}开始。"),
    ("What time does the {event} start?", "{event}几点开始？"),
    ("The {vehicle} to {city} is {minutes} minutes late.", "去{city}的{vehicle}晚点了{minutes}分钟。"),
    ("The {vehicle} leaves at {clock} {future}.", "{vehicle}{future}{clock}出发。"),
    ("This {object_sg} costs {price} dollars.", "这{thing_sg}{price}美元。"),
    ("How much does this {object_sg} cost?", "这{thing_sg}多少钱？"),
    ("{name} is {age} years old.", "{name}{age}岁了。"),
    ("{name} was born in {year}.", "{name}出生于{year}年。"),
    ("The temperature today is {degrees} degrees.", "今天的温度是{degrees}度。"),
    ("The weather will be {weather} {future}.", "{future}天气会很{weather}。"),
    ("Could you please {request}?", "请你{request}，好吗？"),
    ("{subj} likes {activity}.", "{subj}喜欢{activity}。"),
    ("{subj} and {subj2} are going to play {sport} {future}.", "{subj}和{subj2}{future}要去{sport}。"),
    ("{subj} feels {feeling} today.", "{subj}今天觉得很{feeling}。"),
    ("I think {subj} is at {the_place}.", "我觉得{subj}在{the_place}。"),
    ("Where is {subj}?", "{subj}在哪里？"),
    ("Is there {a_place} near here?", "这附近有{the_place}吗？"),
    ("Did {subj} go to {the_place} {past}?", "{subj}{past}去{the_place}了吗？"),
    ("Please put the {object_sg} on the {furniture}.", "请把{object_sg}放在{furniture}上。"),
    ("{subj} is wearing a {colour} {garment}.", "{subj}穿着一件{colour}的{garment}。"),
    ("Take bus number {bus} to {the_place}.", "坐{bus}路公交车去{the_place}。"),
    ("Please go to room {room}.", "请去{room}号房间。"),
    ("The {event} is on {date}.", "{event}在{date}。"),
    ("The office is on the {floor} floor.", "办公室在{floor}楼。"),
    ("We have {minutes} minutes left.", "我们还剩{minutes}分钟。"),
    ("The flight is {hours} hours late.", "航班晚点了{hours}个小时。"),
    ("{subj} has been waiting at {the_place} for {minutes} minutes.", "{subj}已经在{the_place}等了{minutes}分钟。"),
    ("{subj} reads {pages} pages every night.", "{subj}每天晚上读{pages}页书。"),
    ("Every {day}, {subj} goes to {the_place}.", "{subj}每个{day}都去{the_place}。"),
    ("The shop closes at {clock} on {day}.", "商店{day}{clock}关门。"),
    ("There were {people_n} at {the_place} {past}.", "{past}{the_place}有{people_n}。"),
    ("I need {thing_n} for the {event}.", "为了{event}，我需要{thing_n}。"),
    ("{subj} lost {thing_n} {past}.", "{subj}{past}丢了{thing_n}。"),
    ("{subj} will be back at {clock}.", "{subj}会在{clock}回来。"),
    ("My favourite colour is {colour}.", "我最喜欢的颜色是{colour}。"),
]

_SLOT_RE = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Sentence:
    en: str
    zh: str
    template: int  # index into TEMPLATES


@lru_cache(maxsize=1)
def slots() -> dict[str, list[Phrase]]:
    return _build_slots()


def _slot_names(template: str) -> list[str]:
    return _SLOT_RE.findall(template)


def _check_templates() -> None:
    # Both sides must name the same slots, except the paired forms that render one English slot two ways
    # in Chinese (thing_sg <- object_sg, the_place <- a_place).
    paired = {"thing_sg": "object_sg", "the_place": "a_place"}
    for i, (en, zh) in enumerate(TEMPLATES):
        en_slots = set(_slot_names(en))
        zh_slots = {paired.get(s, s) if paired.get(s) in en_slots else s for s in _slot_names(zh)}
        if en_slots != zh_slots:
            raise AssertionError(f"template {i}: English slots {sorted(en_slots)} != Chinese {sorted(zh_slots)}")


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def sample_sentence(rng: random.Random) -> Sentence:
    """One random sentence pair."""
    table = slots()
    index = rng.randrange(len(TEMPLATES))
    en_t, zh_t = TEMPLATES[index]
    chosen: dict[str, int] = {}
    for name in _slot_names(en_t):
        if name in chosen:
            continue
        pick = rng.randrange(len(table[name]))
        if name == "subj2":  # two different people
            while table[name][pick] == table["subj"][chosen.get("subj", -1)]:
                pick = rng.randrange(len(table[name]))
        chosen[name] = pick
    # Chinese-only forms share the index of their English slot (same list order by construction).
    for zh_name, en_name in (("thing_sg", "object_sg"), ("the_place", "a_place")):
        if en_name in chosen and zh_name not in chosen:
            chosen[zh_name] = chosen[en_name]
    en = _SLOT_RE.sub(lambda m: table[m.group(1)][chosen[m.group(1)]][0], en_t)
    zh = _SLOT_RE.sub(lambda m: table[m.group(1)][chosen[m.group(1)]][1], zh_t)
    return Sentence(en=_capitalise(en), zh=zh, template=index)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (apostrophes kept: "o'clock")."""
    return re.findall(r"[a-z']+", text.lower())


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Every English word the grammar can produce."""
    vocab: set[str] = set()
    for en, _zh in TEMPLATES:
        vocab.update(words(_SLOT_RE.sub(" ", en)))
    for phrases in slots().values():
        for en, _zh in phrases:
            vocab.update(words(en))
    return frozenset(vocab)


_check_templates()
