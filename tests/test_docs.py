"""The README and docs/ say only what the code does.

- Every `usam ...` command they quote (in code spans and shell blocks, also `python train/train.py`,
  `python eval/evaluate.py` and `-m usam.cli` launches) parses with the real `usam` argparse parser, so an unknown
  command or flag fails; every `--benchmark NAME` is in the benchmark registry.
- Every relative link and image resolves to a file in the repository, and every `#anchor` to a heading.
- Every ```python block runs against a tiny saved model (the README's model folder, `clip.wav` and the server
  URL are provided in a scratch folder). A block right after `<!-- needs: WHAT -->` is skipped, and the skip
  names WHAT.
- No text in the docs, configs or scripts refers to files outside the repository.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# placeholders that stand for a value of a fixed set in the docs' command synopses
PLACEHOLDERS = {"DATASET": "librispeech", "WHAT": "resolve"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
NEEDS = re.compile(r"<!--\s*needs:\s*(.*?)\s*-->\s*$")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- commands ---------------------------------------------------------------------------------------------------
def _usam_argv(words: list[str]) -> list[str] | None:
    """The `usam` arguments of one command line, or None when it does not run the usam CLI."""
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # NODE_RANK=1 usam ...
        words = words[1:]
    if not words:
        return None
    if words[0] == "usam":
        return words[1:]
    for i, word in enumerate(words):
        if word == "train/train.py":
            return ["train", *words[i + 1:]]
        if word == "eval/evaluate.py":
            return ["eval", *words[i + 1:]]
        if word == "usam.cli" and i and words[i - 1] == "-m":
            return words[i + 1:]
    return None


def commands() -> list[tuple[str, str]]:
    """(where, command line) of every usam command quoted in README.md and docs/*.md."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) in ("bash", "sh", "shell", ""):
                line_no = text[:match.start()].count("\n") + 2
                for k, line in enumerate(match.group(2).splitlines()):
                    line = line.split(" #", 1)[0].strip()
                    if line and not line.startswith("#"):
                        found.append((f"{rel(doc)}:{line_no + k}", line))
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for match in re.finditer(r"`([^`\n]+)`", prose):
            found.append((f"{rel(doc)}:{prose[:match.start()].count(chr(10)) + 1}", match.group(1)))
    out = []
    for where, line in found:
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if _usam_argv(words) is not None:
            out.append((where, line))
    return out


def lenient(parser):
    """The parser with no argument required, so that prose may name `usam data check` without its MANIFEST;
    unknown commands, unknown flags and invalid choices still fail."""
    import argparse

    for action in parser._actions:
        action.required = False
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                lenient(sub)
    return parser


def check_command(line: str) -> str | None:
    """None when `line` parses with the usam parser, else the parser's complaint."""
    from usam.cli import build_parser

    argv = _usam_argv(shlex.split(line))
    argv = [PLACEHOLDERS.get(word, word) for word in argv if word not in ("--help", "-h")]
    argv = [w.rstrip(".").rstrip("…") or w for w in argv]  # "MANIFEST..." in synopses
    if argv and argv[-1] in ("...", "…"):
        argv = argv[:-1]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = lenient(build_parser()).parse_args(argv)
    except SystemExit as exit_:
        if exit_.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exit_.code}"
        return None
    benchmark = getattr(args, "benchmark", None)
    if benchmark and benchmark.isupper():  # NAME in a synopsis
        return None
    if benchmark:
        from usam.evaluation.registry import load_registry

        if benchmark not in load_registry(None):
            return f"unknown benchmark {benchmark!r}"
    return None


COMMANDS = commands()


def test_docs_quote_commands():
    assert len(COMMANDS) >= 30, COMMANDS  # the scan finds them: README and every page quote usam commands
    assert any(where.startswith("README.md") for where, _ in COMMANDS)


@pytest.mark.parametrize("where,line", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_quoted_command_parses(where, line):
    problem = check_command(line)
    assert problem is None, f"{where}: `{line}`: {problem}"


@pytest.mark.parametrize("line", [
    "usam serve runs/demo/stage2/final --made-up-flag 3",
    "usam frobnicate runs/demo",
    "usam eval m --out o --benchmark no-such-benchmark",
    "deepspeed --num_gpus 8 train/train.py --config c.yaml --no-such-option",
    "usam data inspect a.jsonl",
])
def test_command_check_catches_mistakes(line):
    assert check_command(line) is not None


# -- links ------------------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = FENCE.sub("", doc.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


def links() -> list[tuple[str, Path, str]]:
    out = []
    for doc in DOCS:
        text = FENCE.sub("", doc.read_text())
        for match in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)\)", text):
            out.append((rel(doc), doc, match.group(1)))
    return out


LINKS = links()


@pytest.mark.parametrize("source,doc,target", LINKS, ids=[f"{s}->{t}" for s, _, t in LINKS])
def test_relative_link_resolves(source, doc, target):
    if re.match(r"[a-z]+:", target):  # https:, mailto:
        return
    path, _, anchor = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    assert dest.exists(), f"{source}: link {target!r}: {dest} does not exist"
    assert ROOT in dest.parents or dest == ROOT, f"{source}: link {target!r} leaves the repository"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{source}: link {target!r}: no heading #{anchor} in {rel(dest)}"


def test_links_found():
    assert any(t == "docs/architecture.md" for s, _, t in LINKS if s == "README.md")


def test_no_reference_outside_the_repository():
    files = DOCS + [ROOT / "CONTRIBUTING.md", *ROOT.glob("configs/**/*.yaml"), *ROOT.glob("configs/**/*.json"),
                    *ROOT.glob("scripts/*"), *ROOT.glob("train/*.py"), *ROOT.glob("eval/*.py")]
    bad = re.compile(r"DESIGN\.md|\.\./shared|/work/|shared with the project|\bstop \d+\b|issues stops|work log",
                     re.I)
    hits = [f"{rel(f)}:{n}: {line.strip()}" for f in files if f.is_file()
            for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1) if bad.search(line)]
    assert not hits, "\n".join(hits)


# -- python blocks ----------------------------------------------------------------------------------------------
def python_blocks():
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) != "python":
                continue
            before = text[:match.start()].rstrip("\n").splitlines()
            needs = NEEDS.search(before[-1]) if before else None
            line_no = text[:match.start()].count("\n") + 1
            out.append(pytest.param(match.group(2), needs.group(1) if needs else None, id=f"{rel(doc)}:{line_no}"))
    return out


PYTHON_BLOCKS = python_blocks()


@pytest.fixture(scope="module")
def scratch(tiny_model_dir, tmp_path_factory):
    """A folder laid out as after `make demo`: runs/demo/stage2/final (the tiny model) and clip.wav."""
    from usam.serving.testing import encode, tone

    folder = tmp_path_factory.mktemp("docs")
    final = folder / "runs" / "demo" / "stage2" / "final"
    final.parent.mkdir(parents=True)
    final.symlink_to(Path(tiny_model_dir).resolve(), target_is_directory=True)
    (folder / "clip.wav").write_bytes(encode(tone(1.0)))
    return folder


@pytest.fixture(scope="module")
def server_url(scratch):
    """`usam serve runs/demo/stage2/final`, in this process on a free port (uvicorn in a thread)."""
    from usam.modeling import USAMModel
    from usam.processing import USAMProcessor
    from usam.serving.app import ServeSettings, create_app
    from usam.serving.testing import serve_in_thread

    final = scratch / "runs" / "demo" / "stage2" / "final"
    app = create_app(USAMModel.from_pretrained(final).eval(), USAMProcessor.from_pretrained(final),
                     ServeSettings(model_name="final"))
    with serve_in_thread(app) as url:
        yield url.removeprefix("http://")


def test_python_blocks_found():
    assert sum(1 for p in PYTHON_BLOCKS if p.id.startswith("README.md")) >= 2
    assert sum(1 for p in PYTHON_BLOCKS if p.values[1] is None) >= 3


@pytest.mark.parametrize("code,needs", PYTHON_BLOCKS)
def test_python_block_runs(code, needs, scratch, request, monkeypatch, capsys):
    if needs is not None:
        pytest.skip(f"needs: {needs}")
    if "127.0.0.1:8000" in code:
        code = code.replace("127.0.0.1:8000", request.getfixturevalue("server_url"))
    monkeypatch.chdir(scratch)
    start = time.monotonic()
    exec(compile(code, request.node.name, "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert printed.strip(), "the block prints its answers"
    assert time.monotonic() - start < 60
