"""Numbers, clock times, dates and years written as spoken words, in English and Chinese together.

Every function returns an (english, chinese) pair so that the two languages of the speech grammar stay
parallel by construction. English numbers are written without hyphens ("twenty five"), which keeps one
spoken word one written word for WER.
"""
from __future__ import annotations

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ZH_DIGITS = "零一二三四五六七八九"
_ORDINAL_ONES = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                 "nine": "ninth", "twelve": "twelfth"}


def en_number(n: int) -> str:
    """0..999 in English words: 42 -> 'forty two', 105 -> 'one hundred and five'."""
    if not 0 <= n <= 999:
        raise ValueError(f"en_number supports 0..999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + ("" if rest == 0 else " and " + en_number(rest))


def zh_number(n: int) -> str:
    """0..999 in Chinese numerals as read aloud: 12 -> 十二, 105 -> 一百零五, 110 -> 一百一十."""
    if not 0 <= n <= 999:
        raise ValueError(f"zh_number supports 0..999, got {n}")
    if n < 10:
        return _ZH_DIGITS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return ("" if tens == 1 else _ZH_DIGITS[tens]) + "十" + ("" if ones == 0 else _ZH_DIGITS[ones])
    hundreds, rest = divmod(n, 100)
    out = _ZH_DIGITS[hundreds] + "百"
    if rest == 0:
        return out
    if rest < 10:
        return out + "零" + _ZH_DIGITS[rest]
    tens, ones = divmod(rest, 10)
    return out + _ZH_DIGITS[tens] + "十" + ("" if ones == 0 else _ZH_DIGITS[ones])


def zh_count(n: int) -> str:
    """A Chinese number before a measure word: 2 is 两, not 二."""
    return "两" if n == 2 else zh_number(n)


def en_ordinal(n: int) -> str:
    """1..99 as an English ordinal: 21 -> 'twenty first'."""
    words = en_number(n).split()
    last = words[-1]
    if last in _ORDINAL_ONES:
        words[-1] = _ORDINAL_ONES[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def en_cardinal(n: int) -> str:
    """0..999999 in words without hyphens: 2500 -> 'two thousand five hundred'."""
    if not 0 <= n <= 999_999:
        raise ValueError(f"en_cardinal supports 0..999999, got {n}")
    thousands, rest = divmod(n, 1000)
    if not thousands:
        return en_number(rest)
    words = f"{en_number(thousands)} thousand"
    if rest:
        words += (" and " if rest < 100 else " ") + en_number(rest)
    return words


def en_year(n: int) -> str:
    """A four-digit year as spoken: 1984 -> 'nineteen eighty four', 1900 -> 'nineteen hundred',
    2005 -> 'two thousand and five', 1805 -> 'eighteen oh five'."""
    century, rest = divmod(n, 100)
    if 2000 <= n <= 2009:
        return "two thousand" + ("" if rest == 0 else " and " + en_number(rest))
    if rest == 0:
        return f"{en_number(century)} hundred"
    return f"{en_number(century)} " + (f"oh {en_number(rest)}" if rest < 10 else en_number(rest))


def clock_times() -> list[tuple[str, str]]:
    """Spoken clock times: 'seven o'clock' / 七点, 'half past seven' / 七点半, 'ten twenty' / 十点二十分."""
    out = []
    for h in range(1, 13):
        en_h, zh_h = en_number(h), zh_count(h)
        out.append((f"{en_h} o'clock", f"{zh_h}点"))
        out.append((f"half past {en_h}", f"{zh_h}点半"))
        out.append((f"a quarter past {en_h}", f"{zh_h}点一刻"))
        for minutes in (10, 20, 25, 40, 50):
            out.append((f"{en_h} {en_number(minutes)}", f"{zh_h}点{zh_number(minutes)}分"))
    return out


def years() -> list[tuple[str, str]]:
    """Years as spoken: 1985 -> 'nineteen eighty five' / 一九八五; 2019 -> 'twenty nineteen' / 二零一九."""
    out = []
    for year in list(range(1950, 2000)) + list(range(2010, 2030)):
        en = en_year(year)
        zh = "".join(_ZH_DIGITS[int(d)] for d in str(year))
        out.append((en, zh))
    return out
