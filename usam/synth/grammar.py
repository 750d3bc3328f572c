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
        "clock2": clock_times(),
        "a_job": [(_article(en), zh) for en, zh in lx.JOBS],
        "language": lx.LANGUAGES,
        "dish": lx.DISHES,
        "transport": lx.TRANSPORT,
        "appliance": lx.APPLIANCES,
        "topic": lx.TOPICS,
        "ailment": lx.AILMENTS,
        "sibling_n": _counted(lx.SIBLINGS, range(1, 8)),
        "building": lx.BUILDINGS,
        "street": lx.STREETS,
        "room_of_house": lx.ROOMS,
        "season": lx.SEASONS,
        "chore": lx.CHORES,
        "phrase": lx.PHRASES,
        "animal_sg": [(sg, zh) for sg, _pl, zh, _mw in lx.ANIMALS],
        "animal_mw": [(sg, f"{mw}") for sg, _pl, _zh, mw in lx.ANIMALS],
        "animals_pl": [(pl, zh) for _sg, pl, zh, _mw in lx.ANIMALS],
        "food_pl": [(pl, zh) for _sg, pl, zh, _mw in lx.FOODS if " of " not in pl],
        "people_count": [(en_number(n), zh_count(n)) for n in range(2, 13)],
        "percent": [(en_number(n), zh_number(n)) for n in range(2, 61)],
        "goals": [(en_number(n), zh_count(n)) for n in range(2, 10)],
        "km": [(en_number(n), zh_count(n)) for n in range(2, 43)],
        "months_n": [(en_number(n), zh_count(n)) for n in range(2, 19)],
        "floors_n": [(en_number(n), zh_count(n)) for n in range(2, 41)],
        "years_n": [(en_number(n), zh_count(n)) for n in range(2, 21)],
        "house_number": [(en_number(n), zh_number(n)) for n in range(1, 201)],
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
    ("{phrase}", "{phrase}"),
    ("{name} works as {a_job}.", "{name}是一名{a_job}。"),
    ("{name} wants to be {a_job} one day.", "{name}希望有一天能成为{a_job}。"),
    ("{subj} can speak {language} very well.", "{subj}{language}说得很好。"),
    ("{name} has been learning {language} for {years_n} years.", "{name}学{language}已经{years_n}年了。"),
    ("A table for {people_count}, please.", "请给我们一张{people_count}人的桌子。"),
    ("{subj} takes the {transport} to work every day.", "{subj}每天坐{transport}去上班。"),
    ("It takes {minutes} minutes to walk to {the_place}.", "走到{the_place}要{minutes}分钟。"),
    ("{subj} cooked {dish} for dinner {past}.", "{subj}{past}晚饭做了{dish}。"),
    ("{subj} would like to eat {dish} tonight.", "{subj}今天晚上想吃{dish}。"),
    ("The {animal_sg} is sleeping under the {furniture}.", "{animal_sg}在{furniture}下面睡觉。"),
    ("{subj} is afraid of {animals_pl}.", "{subj}害怕{animals_pl}。"),
    ("{subj} lives in {city}.", "{subj}住在{city}。"),
    ("{subj} moved to {city} in {year}.", "{subj}在{year}年搬到了{city}。"),
    ("The museum opens at {clock} and closes at {clock2}.", "博物馆{clock}开门，{clock2}关门。"),
    ("How long does it take to get to {city}?", "去{city}要多长时间？"),
    ("It is {degrees} degrees in {city} today.", "{city}今天{degrees}度。"),
    ("{subj} has {sibling_n}.", "{subj}有{sibling_n}。"),
    ("Please turn off the {appliance} before you leave.", "走之前请关掉{appliance}。"),
    ("The {appliance} in the kitchen is broken.", "厨房里的{appliance}坏了。"),
    ("{subj} is reading a book about {topic}.", "{subj}在看一本关于{topic}的书。"),
    ("{subj} has {ailment}.", "{subj}{ailment}。"),
    ("{subj} should see a doctor {future}.", "{subj}{future}应该去看医生。"),
    ("The price of {food_pl} went up by {percent} percent.", "{food_pl}的价格上涨了百分之{percent}。"),
    ("Our team scored {goals} goals {past}.", "我们队{past}进了{goals}个球。"),
    ("{subj} ran {km} kilometres this morning.", "{subj}今天早上跑了{km}公里。"),
    ("The baby is {months_n} months old.", "宝宝{months_n}个月大了。"),
    ("The {building} has {floors_n} floors.", "这栋{building}有{floors_n}层。"),
    ("My address is {house_number} {street} Street.", "我的地址是{street}街{house_number}号。"),
    ("Please call me back in {minutes} minutes.", "请{minutes}分钟后给我回电话。"),
    ("There is a {colour} car in front of {the_place}.", "{the_place}前面有一辆{colour}的汽车。"),
    ("{subj} painted the {room_of_house} {colour}.", "{subj}把{room_of_house}刷成了{colour}。"),
    ("Did you see the {colour} {animal_sg}?", "你看到那{animal_mw}{colour}的{animal_sg}了吗？"),
    ("{subj} is going to {the_place} to buy {food_pl}.", "{subj}要去{the_place}买{food_pl}。"),
    ("{season} is my favourite season.", "{season}是我最喜欢的季节。"),
    ("In {season}, {subj} likes {activity}.", "{season}的时候，{subj}喜欢{activity}。"),
    ("We need to leave in {minutes} minutes.", "我们得在{minutes}分钟后出发。"),
    ("Remember to {chore} before {clock}.", "记得在{clock}之前{chore}。"),
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


# Chinese-only renderings of an English slot: they take the same index as that slot.
PAIRED = {"thing_sg": "object_sg", "the_place": "a_place", "animal_mw": "animal_sg"}


def _check_templates() -> None:
    """Both sides of each template name the same slots (up to PAIRED renderings)."""
    for i, (en, zh) in enumerate(TEMPLATES):
        en_slots = set(_slot_names(en))
        zh_slots = {PAIRED[s] if s in PAIRED and PAIRED[s] in en_slots else s for s in _slot_names(zh)}
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
    for zh_name, en_name in PAIRED.items():
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
