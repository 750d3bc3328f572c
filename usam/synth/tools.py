"""The external programs the corpus generator calls, and the check that they are installed.

Each tool maps to the Debian package that provides it, so a missing one stops `usam synth` with the
exact `apt-get install` line to run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# program -> Debian package
PROGRAMS = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "text2wave": "festival",   # festival's batch front end
    "fluidsynth": "fluidsynth",
    "sox": "sox",
}
# festival voice -> (folder holding it, Debian package)
FESTIVAL_VOICES = {
    "kal_diphone": ("/usr/share/festival/voices/english/kal_diphone", "festvox-kallpc16k"),
    "cmu_us_slt_arctic_hts": ("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
}
SOUNDFONT_CANDIDATES = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
SOUNDFONT_PACKAGE = "fluid-soundfont-gm"


class MissingToolError(RuntimeError):
    """An external program, voice or data file the generator needs is not installed."""

    def __init__(self, what: str, package: str, detail: str = ""):
        self.what = what
        self.package = package
        super().__init__(f"usam synth needs {what}{detail}; install it with: "
                         f"apt-get install -y {package}")


class ToolFailedError(RuntimeError):
    """An external program ran but failed; the message carries its command line and stderr."""


def which(program: str) -> str | None:
    return shutil.which(program)


def find_soundfont(configured: str | None = None) -> str:
    """The General MIDI soundfont: the configured path, $USAM_SOUNDFONT, or Debian's FluidR3."""
    if configured:
        if not Path(configured).is_file():
            raise MissingToolError(f"the soundfont {configured}", SOUNDFONT_PACKAGE,
                                   " (configured as music.soundfont, but the file does not exist)")
        return configured
    env = os.environ.get("USAM_SOUNDFONT")
    if env:
        if not Path(env).is_file():
            raise MissingToolError(f"the soundfont {env}", SOUNDFONT_PACKAGE,
                                   " (named by $USAM_SOUNDFONT, but the file does not exist)")
        return env
    for path in SOUNDFONT_CANDIDATES:
        if Path(path).is_file():
            return path
    raise MissingToolError("a General MIDI soundfont", SOUNDFONT_PACKAGE,
                           f" (looked for {', '.join(SOUNDFONT_CANDIDATES)}; or set $USAM_SOUNDFONT)")


def check_tools(programs, festival_voices=(), soundfont: str | None | bool = False) -> dict[str, str]:
    """Raise MissingToolError naming the first missing program/voice/soundfont; return program -> path.

    soundfont: False when no music is made, None to search the default places, or a configured path.
    """
    found = {}
    for program in programs:
        path = which(program)
        if path is None:
            raise MissingToolError(f"the program `{program}`", PROGRAMS[program], " (not found on PATH)")
        found[program] = path
    for voice in festival_voices:
        folder, package = FESTIVAL_VOICES[voice]
        if not Path(folder).is_dir():
            raise MissingToolError(f"the festival voice {voice}", package, f" ({folder} does not exist)")
    if soundfont is not False:
        found["soundfont"] = find_soundfont(soundfont)
    return found


def run_tool(cmd: list[str], *, input_text: str | None = None, timeout: float = 120.0) -> None:
    """Run one external command; raise ToolFailedError with its stderr when it fails."""
    try:
        proc = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as err:
        program = cmd[0]
        raise MissingToolError(f"the program `{program}`", PROGRAMS.get(program, program),
                               " (not found on PATH)") from err
    except subprocess.TimeoutExpired as err:
        raise ToolFailedError(f"`{' '.join(cmd)}` took longer than {timeout:.0f} s") from err
    if proc.returncode != 0:
        raise ToolFailedError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: "
                              f"{proc.stderr.strip()[-2000:]}")
