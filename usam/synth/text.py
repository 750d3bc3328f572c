"""Everyday English sentences for the speech clips, built offline from two Debian data packages.

Sources (read from the installed packages; nothing is downloaded):
  WordNet 3.0 (`wordnet-base`, /usr/share/wordnet/data.{noun,verb,adj,adv}): the quoted example sentences
    inside the synset glosses. Licence: the WordNet 3.0 licence (Princeton University; use, copy, modify and
    distribute for any purpose without fee, keeping the copyright notice; see
    /usr/share/doc/wordnet-base/copyright).
  fortune-mod's minimal set (`fortunes-min`, /usr/share/games/fortunes/{fortunes,literature,riddles}): the
    quotations, split into sentences, attribution lines dropped. Licence: BSD (The Regents of the University
    of California; see /usr/share/doc/fortunes-min/copyright).

Every candidate goes through `normalise`, which makes it speakable exactly as written (the text is both what
the voice reads and the ASR reference): quotes stripped, common abbreviations expanded (Mr. -> mister,
Dr. -> doctor, St. -> saint/street, etc. -> et cetera ...), numbers written as words (usam.synth.numbers:
cardinals, years, ordinals, percentages, dollars, decimals), hyphenated words split; a line is rejected when
anything a voice would not read sensibly is left (URLs, e-mail addresses, brackets, digits, symbols, non-ASCII,
all-capital words, initialisms), or when it has fewer than 4 or more than 20 words. Duplicates are removed
case-insensitively (on the lower-cased word sequence), and so is every sentence equal to one of the
hand-written test sentences (`data/everyday_sentences.txt`, see `everyday_test_sentences`).

The pool (sorted, so independent of file order) is cached as a gzip text file in the cache root
(usam.paths: $USAM_CACHE, else ~/.cache/usam), keyed by the source files' sizes and times and the hand-written file. `split_pool` assigns
each sentence to train/valid/test by a hash of its normalised words, so a sentence is in one split only and
the assignment does not depend on the seed or on the pool's other sentences.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

from usam.paths import cache_root
from usam.synth.numbers import en_cardinal, en_number, en_ordinal, en_year
from usam.synth.tools import MissingToolError

POOL_VERSION = "1"
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = tuple(WORDNET_DIR / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv"))
FORTUNE_DIR = Path("/usr/share/games/fortunes")
FORTUNE_FILES = tuple(FORTUNE_DIR / name for name in ("fortunes", "literature", "riddles"))
EVERYDAY_FILE = Path(__file__).resolve().parent / "data" / "everyday_sentences.txt"
MIN_WORDS, MAX_WORDS = 4, 20

# Abbreviation (with its period) -> spoken form. Matched case-sensitively at word boundaries.
ABBREVIATIONS = {
    "Mr.": "mister", "Mrs.": "missus", "Ms.": "miz", "Dr.": "doctor", "Prof.": "professor",
    "Jr.": "junior", "Sr.": "senior", "Mt.": "mount", "Ft.": "fort", "Capt.": "captain", "Gen.": "general",
    "Col.": "colonel", "Lt.": "lieutenant", "Sgt.": "sergeant", "Gov.": "governor", "Rev.": "reverend",
    "Ave.": "avenue", "Rd.": "road", "Co.": "company", "Corp.": "corporation", "Inc.": "incorporated",
    "Ltd.": "limited", "Dept.": "department", "Feb.": "february", "Aug.": "august",
    "Sept.": "september", "Oct.": "october", "Nov.": "november", "Dec.": "december",
    "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is", "vs.": "versus", "approx.": "approximately",
    "esp.": "especially",
}
_ABBR_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(a) for a in sorted(ABBREVIATIONS, key=len, reverse=True))
                      + r")(?=\s|$|,)")
_ST_RE = re.compile(r"\bSt\.(?=\s+([A-Z])?)")
_BAD_RE = re.compile(r"https?:|www\.|\.(com|org|net|edu)\b|@|[\[\](){}<>_/\\|#*=+~^]")
_ALLOWED_RE = re.compile(r"^[A-Za-z ,.;:!?'-]+$")
_NUMBER_RE = re.compile(
    r"(?P<dollar>\$)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?P<suffix>st|nd|rd|th|%| percent)?(?![\w])")


def _number_words(m: re.Match) -> str | None:
    raw, frac, suffix, dollar = m.group("int"), m.group("frac"), m.group("suffix"), m.group("dollar")
    n = int(raw.replace(",", ""))
    if suffix in ("st", "nd", "rd", "th"):
        if frac or dollar or not 1 <= n <= 99:
            return None
        return en_ordinal(n)
    if frac is not None:
        if "," in raw or n > 999_999 or len(frac) > 3:
            return None
        words = en_cardinal(n) + " point " + " ".join(en_number(int(d)) for d in frac)
    elif "," not in raw and len(raw) == 4 and 1100 <= n <= 2099 and not dollar and not suffix:
        words = en_year(n)
    elif (len(raw) > 1 and raw.startswith("0")) or n > 999_999:
        return None
    else:
        words = en_cardinal(n)
    if suffix:
        words += " percent"
    if dollar:
        words += " dollar" if n == 1 and frac is None else " dollars"
    return words


def _numbers_to_words(text: str) -> str | None:
    failed = False

    def sub(m: re.Match) -> str:
        nonlocal failed
        words = _number_words(m)
        if words is None:
            failed = True
            return m.group(0)
        return words

    out = _NUMBER_RE.sub(sub, text)
    return None if failed else out


def _strip_quote_marks(text: str) -> str:
    """Drop double quotes and backticks, and single quotes used as quotation marks (not apostrophes)."""
    text = re.sub(r'["`]', " ", text)
    tokens = []
    for tok in text.split():
        tok = tok.lstrip("'")
        m = re.match(r"^(.*?)('+)([,.;:!?]*)$", tok)
        if m and not m.group(1).endswith("s"):  # "dogs'" is a plural possessive
            tok = m.group(1) + m.group(3)
        if tok.strip(",.;:!?"):
            tokens.append(tok)
    return " ".join(tokens)


def normalise(line: str) -> str | None:
    """`line` as a sentence a voice reads exactly as written, or None when it cannot be made so."""
    if not line or not line.isascii() or _BAD_RE.search(line):
        return None
    text = _strip_quote_marks(" ".join(line.split()))
    text = _ST_RE.sub(lambda m: "Saint" if m.group(1) else "street", text)
    text = _ABBR_RE.sub(lambda m: ABBREVIATIONS[m.group(1)], text)
    text = re.sub(r"\b[Nn]o\.\s+(?=\d)", "number ", text)
    text = text.replace("&", " and ")
    text = _numbers_to_words(text)
    if text is None:
        return None
    text = re.sub(r"\s*--+\s*", ", ", text)               # a dash pause reads as a comma
    text = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", text)  # "well-known" -> "well known"
    text = re.sub(r"\s+([,.;:!?])", r"\1", " ".join(text.split()))
    text = text.strip(" ,;:")
    if not text or not _ALLOWED_RE.match(text) or "-" in text:
        return None  # digits, symbols or stray dashes left
    if re.search(r"\b[A-Z]{2,}\b|\.\w|[,.;:!?]{2,}|^[.!?]", text):
        return None  # shouting or acronyms, initialisms and unknown abbreviations, ellipses, "?!"
    if re.search(r"[.;:!?]\s+[a-z]", text):
        return None  # a stop inside that does not start a new sentence (a leftover abbreviation)
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        return None
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?":
        text += "."
    return text


def key(sentence: str) -> str:
    """The deduplication key: lower-cased words (apostrophes kept)."""
    return " ".join(re.findall(r"[a-z']+", sentence.lower()))


def words(sentence: str) -> list[str]:
    return key(sentence).split()


# ---- sources ------------------------------------------------------------------------------------------
def _missing(files, package: str) -> None:
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MissingToolError(f"the data files {', '.join(missing)}", package,
                               " (the everyday-English text pool is built from them)")


def wordnet_examples() -> list[str]:
    """The quoted example sentences of every WordNet gloss."""
    _missing(WORDNET_FILES, "wordnet-base")
    out = []
    for path in WORDNET_FILES:
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith(" "):  # the licence header
                    continue
                _, bar, gloss = line.partition(" | ")
                if bar:
                    out += re.findall(r'"([^"]+)"', gloss)
    return out


def fortune_sentences() -> list[str]:
    """Each fortune quotation split into sentences; attribution lines ('-- Author') dropped."""
    _missing(FORTUNE_FILES, "fortunes-min")
    out = []
    for path in FORTUNE_FILES:
        text = path.read_text(encoding="latin-1")
        for cookie in text.split("\n%\n"):
            body = [l for l in cookie.splitlines() if not re.match(r"^\s*(--|%)", l)]
            if any(re.match(r"^\s*[A-Z][a-z]*:\s", l) for l in body):
                continue  # dialogues ("Q: ...", "Mother: ...")
            flat = " ".join(" ".join(body).split())
            out += re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", flat)
    return out


def everyday_test_sentences(path: Path = EVERYDAY_FILE) -> list[str]:
    """The hand-written generalisation sentences (comments and blank lines skipped), in file order."""
    lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    return [l for l in lines if l and not l.startswith("#")]


def build_pool(exclude: set[str] | None = None) -> list[str]:
    """Normalised, deduplicated sentences of both sources, minus `exclude` (keys), sorted by key."""
    exclude = set() if exclude is None else exclude
    seen: dict[str, str] = {}
    for raw in wordnet_examples() + fortune_sentences():
        sentence = normalise(raw)
        if sentence is None:
            continue
        k = key(sentence)
        if k in exclude or k in seen:
            continue
        seen[k] = sentence
    return [seen[k] for k in sorted(seen)]


def _cache_dir() -> Path:
    return cache_root()


def _fingerprint() -> str:
    parts = [POOL_VERSION, hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
             hashlib.sha256(EVERYDAY_FILE.read_bytes()).hexdigest()]
    for path in WORDNET_FILES + FORTUNE_FILES:
        st = path.stat()
        parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def everyday_pool() -> tuple[str, ...]:
    """The cached pool (built on first use, a few seconds)."""
    _missing(WORDNET_FILES, "wordnet-base")
    _missing(FORTUNE_FILES, "fortunes-min")
    path = _cache_dir() / f"everyday_pool-{_fingerprint()}.txt.gz"
    if path.is_file():
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return tuple(line.rstrip("\n") for line in f if line.strip())
        except (OSError, EOFError):
            pass
    pool = build_pool({key(s) for s in everyday_test_sentences()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(("\n".join(pool) + "\n").encode("utf-8"))
    os.replace(tmp, path)
    return tuple(pool)


def split_of(sentence: str, fractions: dict[str, float]) -> str:
    """train/valid/test for a sentence, by a hash of its key, in proportion to `fractions`."""
    total = sum(fractions.values())
    u = int.from_bytes(hashlib.sha256(key(sentence).encode()).digest()[:8], "little") / 2 ** 64 * total
    acc = 0.0
    names = [s for s in ("train", "valid", "test") if fractions.get(s, 0) > 0]
    for name in names:
        acc += fractions[name]
        if u < acc:
            return name
    return names[-1]


def split_pool(pool, fractions: dict[str, float]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for sentence in pool:
        out[split_of(sentence, fractions)].append(sentence)
    return {k: tuple(v) for k, v in out.items()}


def pool_stats(pool) -> dict:
    vocab = {w for s in pool for w in words(s)}
    return {"sentences": len(pool), "distinct_words": len(vocab)}
