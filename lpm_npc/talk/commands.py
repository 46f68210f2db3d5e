"""What the player types at the `lpm-npc talk` prompt: one line -> one typed command."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..config import MAX_SIZE, MIN_SIZE, SUPPORTED_FPS
from ..types import Emotion, Phase


class CommandError(ValueError):
    """A line that is not a valid command; the message says what to type instead."""


@dataclass(frozen=True)
class Say:
    """Speak `text` with eSpeak NG as the NPC's next line."""
    text: str


@dataclass(frozen=True)
class Play:
    """Play a WAV (any file libsndfile reads) as the NPC's next line."""
    path: str


@dataclass(frozen=True)
class SetEmotion:
    emotion: Emotion
    intensity: float = 1.0
    transition_ms: int = 300


@dataclass(frozen=True)
class SetPhase:
    phase: Phase


@dataclass(frozen=True)
class Direct:
    """Free-text direction ("nods slowly, a bit nervous")."""
    text: str


@dataclass(frozen=True)
class Interrupt:
    """Barge in: the NPC stops talking now (queued lines are dropped)."""


@dataclass(frozen=True)
class SetSize:
    size: int


@dataclass(frozen=True)
class SetFps:
    fps: int


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class Wait:
    """Pause the script: `seconds`, or None = until the NPC has finished its queued lines."""
    seconds: float | None = None


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Quit:
    pass


Command = (Say | Play | SetEmotion | SetPhase | Direct | Interrupt | SetSize | SetFps | Pause | Resume
           | Wait | Help | Quit)

HELP = """commands (one per line; '#' starts a comment):
  say TEXT                      the NPC speaks TEXT (eSpeak NG), after any line already queued
  play FILE.wav                 the NPC speaks a recorded line
  emotion NAME [0..1] [MS]      neutral happy sad angry surprised afraid disgusted; intensity, transition ms
  phase NAME                    idle listening thinking speaking
  direct TEXT                   free-text direction, e.g. "direct nods slowly, a bit nervous"
  interrupt                     barge in: the NPC stops talking now
  size N                        frame size N x N ({min}..{max} px)
  fps N                         frame rate ({fps})
  pause | resume                stop / restart rendering
  wait [SECONDS]                (scripts) wait SECONDS, or until the NPC has finished its lines
  help                          this list
  quit                          stop (also: Ctrl-C, or q / Esc in the window)""".format(
    min=MIN_SIZE, max=MAX_SIZE, fps=", ".join(str(f) for f in SUPPORTED_FPS))

_VERBS = ("say", "play", "emotion", "phase", "direct", "interrupt", "size", "fps", "pause", "resume", "wait",
          "help", "quit")
_ALIASES = {"exit": "quit", "q": "quit", "?": "help", "direction": "direct", "stop": "interrupt"}


class CommandParser:
    """Turns a typed line into a Command; raises CommandError with a usable message for bad input."""

    def parse(self, line: str) -> Command | None:
        """None for an empty line or a comment."""
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        verb, _, rest = text.partition(" ")
        verb = _ALIASES.get(verb.lower(), verb.lower())
        rest = rest.strip()
        handler = getattr(self, f"_{verb}", None)
        if verb not in _VERBS or handler is None:
            close = difflib.get_close_matches(verb, _VERBS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise CommandError(f"unknown command '{verb}'{hint}; type 'help' for the list")
        return handler(rest)

    # -- one method per verb ---------------------------------------------------------------------
    def _say(self, rest: str) -> Say:
        if not rest:
            raise CommandError("say needs the NPC's line, e.g. 'say Hello there, traveller'")
        return Say(_unquote(rest))

    def _play(self, rest: str) -> Play:
        if not rest:
            raise CommandError("play needs a file, e.g. 'play lines/greeting.wav'")
        return Play(_unquote(rest))

    def _emotion(self, rest: str) -> SetEmotion:
        args = rest.split()
        if not 1 <= len(args) <= 3:
            raise CommandError("usage: emotion NAME [INTENSITY 0..1] [TRANSITION_MS], e.g. 'emotion happy 0.8'")
        emotion = _enum(Emotion, args[0], "emotion")
        intensity = 1.0
        if len(args) >= 2:
            intensity = _number(args[1], "intensity")
            if not 0.0 <= intensity <= 1.0:
                raise CommandError(f"intensity {args[1]} must be within 0..1")
        transition = 300
        if len(args) == 3:
            transition = int(_number(args[2], "transition_ms"))
            if not 0 <= transition <= 60000:
                raise CommandError(f"transition {args[2]} ms must be within 0..60000")
        return SetEmotion(emotion, intensity, transition)

    def _phase(self, rest: str) -> SetPhase:
        if len(rest.split()) != 1:
            raise CommandError(f"usage: phase NAME ({', '.join(p.value for p in Phase)})")
        return SetPhase(_enum(Phase, rest, "phase"))

    def _direct(self, rest: str) -> Direct:
        if not rest:
            raise CommandError("direct needs a direction, e.g. 'direct nods slowly, a bit nervous'")
        text = _unquote(rest)
        if len(text) > 1000:
            raise CommandError("a direction is at most 1000 characters")
        return Direct(text)

    def _interrupt(self, rest: str) -> Interrupt:
        _no_args("interrupt", rest)
        return Interrupt()

    def _size(self, rest: str) -> SetSize:
        value = _number(rest, "size") if rest else None
        if value is None or value != int(value) or not MIN_SIZE <= value <= MAX_SIZE:
            raise CommandError(f"usage: size N with N a whole number of pixels in {MIN_SIZE}..{MAX_SIZE}")
        return SetSize(int(value))

    def _fps(self, rest: str) -> SetFps:
        value = _number(rest, "fps") if rest else None
        if value is None or value not in SUPPORTED_FPS:
            raise CommandError(f"usage: fps N with N one of {', '.join(str(f) for f in SUPPORTED_FPS)}")
        return SetFps(int(value))

    def _pause(self, rest: str) -> Pause:
        _no_args("pause", rest)
        return Pause()

    def _resume(self, rest: str) -> Resume:
        _no_args("resume", rest)
        return Resume()

    def _wait(self, rest: str) -> Wait:
        if not rest:
            return Wait(None)
        seconds = _number(rest.removesuffix("s"), "seconds")
        if not 0.0 <= seconds <= 3600.0:
            raise CommandError("wait takes 0..3600 seconds")
        return Wait(seconds)

    def _help(self, rest: str) -> Help:
        return Help()

    def _quit(self, rest: str) -> Quit:
        _no_args("quit", rest)
        return Quit()


def _no_args(verb: str, rest: str) -> None:
    if rest:
        raise CommandError(f"'{verb}' takes no arguments")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"{what} must be a number, got '{text}'") from None
    if value != value:
        raise CommandError(f"{what} must be a number, got '{text}'")
    return value


def _enum(kind, text: str, what: str):
    try:
        return kind(text.strip().lower())
    except ValueError:
        names = ", ".join(e.value for e in kind)
        raise CommandError(f"unknown {what} '{text}'; use one of {names}") from None
