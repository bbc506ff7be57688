"""The volfile lexer and parser: GlusterFS's grammar, with 2.0's strictness.

The lexer follows GlusterFS's flex rules: keywords are whole lower-case tokens, `#` starts a
comment only where a token could start, a quoted string takes backslash escapes and may not
hold a newline, and any other run of non-blank characters (except `"` and `\\`) is one word.
Newlines carry no meaning.

The parser accepts `volume NAME`, then `type` first and exactly once, options before and after
at most one `subvolumes` line, then `end-volume`. Every mistake raises `VolfileError` naming the
file, the line and the volume; parsing stops at the first one. Backticks, which GlusterFS
replaces by a command's output before parsing, are refused: a volfile never runs commands.

Invariant of the result: volume names are unique, every subvolume was defined earlier in the
file and is not the volume itself, option keys are unique within a volume, and every option,
type and subvolumes line number is recorded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import NoReturn

from glusterpy.volfile.model import Volfile, VolfileError, VolumeDef

log = logging.getLogger(__name__)

KEYWORDS = frozenset({"volume", "type", "end-volume", "subvolumes", "subvolumeS", "option"})
BACKTICK_MESSAGE = "backtick command substitution is not supported: volfiles never run commands"
_BLANKS = " \t\r\n"
_WORD_ENDS = _BLANKS + '"\\'


@dataclass(frozen=True, slots=True)
class Token:
    """One lexed token. `kind` is a keyword (its own text), "word" or "end" (end of file)."""

    kind: str
    text: str
    line: int
    quoted: bool = False

    def shown(self) -> str:
        if self.kind == "end":
            return "the end of the file"
        if self.kind == "word":
            return f"'{self.text}'"
        return f"keyword '{self.text}'"


class _Lexer:
    """Splits volfile text into tokens, tracking the line each one starts on."""

    def __init__(self, text: str, path: str):
        self.text = text
        self.path = path
        self.pos = 0
        self.line = 1

    def fail(self, message: str, line: int | None = None) -> NoReturn:
        raise VolfileError(self.path, self.line if line is None else line, message)

    def next(self) -> Token:
        """The next token; at the end of the text, an "end" token every time."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in _BLANKS:
                self.line += char == "\n"
                self.pos += 1
            elif char == "#":
                self._skip_comment()
            elif char == '"':
                return self._string()
            elif char == "\\":
                self.fail("a backslash outside a quoted string")
            else:
                return self._word()
        return Token("end", "", self.line)

    def _skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        # GlusterFS expands backticks before lexing, so even one in a comment would run.
        if "`" in self.text[self.pos : end]:
            self.fail(BACKTICK_MESSAGE)
        self.pos = end

    def _word(self) -> Token:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _WORD_ENDS:
            self.pos += 1
        word = self.text[start : self.pos]
        if "`" in word:
            self.fail(BACKTICK_MESSAGE)
        kind = word if word in KEYWORDS else "word"
        return Token(kind, word, self.line)

    def _string(self) -> Token:
        start_line = self.line
        chars = []
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return Token("word", "".join(chars), start_line, quoted=True)
            if char == "\n":
                self.fail("a quoted string may not span lines (missing closing '\"')")
            if char == "`":
                self.fail(BACKTICK_MESSAGE)
            if char == "\\":
                self.pos += 1
                if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                    self.fail("a backslash at the end of a line inside a quoted string")
                char = self.text[self.pos]
            chars.append(char)
            self.pos += 1
        self.fail("unterminated quoted string (missing closing '\"')", start_line)


class _Parser:
    """Builds `VolumeDef`s from tokens, applying the grammar's semantic checks as it goes."""

    def __init__(self, lexer: _Lexer, path: str):
        self.lexer = lexer
        self.path = path
        self.lookahead: Token | None = None
        self.current: str | None = None
        self.volumes: list[VolumeDef] = []
        self.by_name: dict[str, VolumeDef] = {}

    def peek(self) -> Token:
        if self.lookahead is None:
            self.lookahead = self._lex()
        return self.lookahead

    def take(self) -> Token:
        token = self.peek()
        self.lookahead = None
        return token

    def _lex(self) -> Token:
        # Tokens are read on demand so that a lexical error can name the volume it is in.
        try:
            return self.lexer.next()
        except VolfileError as e:
            if e.volume is not None or self.current is None:
                raise
            raise VolfileError(e.path, e.line, e.message, self.current) from None

    def fail(self, line: int, message: str, volume: str | None = None) -> NoReturn:
        raise VolfileError(self.path, line, message, volume)

    def volfile(self) -> Volfile:
        while self.peek().kind != "end":
            token = self.take()
            if token.kind != "volume":
                self.fail(token.line, f"expected 'volume', found {token.shown()}")
            self._volume(token)
        if not self.volumes:
            self.fail(self.peek().line, "no volume is defined")
        return Volfile(self.path, self.volumes)

    def _word(self, what: str, volume: str | None) -> Token:
        token = self.take()
        if token.kind != "word":
            hint = " (quote a keyword to use it as a word)" if token.kind != "end" else ""
            self.fail(token.line, f"expected {what}, found {token.shown()}{hint}", volume)
        return token

    def _volume(self, start: Token) -> None:
        name = self._word("a volume name after 'volume'", None).text
        if name in self.by_name:
            first = self.by_name[name].line
            self.fail(start.line, f"volume '{name}' defined again (first at line {first})")
        self.current = name
        type_token = self.take()
        if type_token.kind != "type":
            self.fail(type_token.line, f"'type' must come first, found {type_token.shown()}", name)
        volume = VolumeDef(name=name, type="", line=start.line, type_line=type_token.line)
        volume.type = self._word("a translator type after 'type'", name).text
        self._body(volume)
        self.current = None
        self.volumes.append(volume)
        self.by_name[name] = volume

    def _body(self, volume: VolumeDef) -> None:
        while True:
            token = self.take()
            if token.kind == "end-volume":
                return
            if token.kind == "option":
                self._option(volume, token)
            elif token.kind in ("subvolumes", "subvolumeS"):
                self._subvolumes(volume, token)
            elif token.kind == "type":
                message = f"'type' given again (first at line {volume.type_line})"
                self.fail(token.line, message, volume.name)
            elif token.kind == "end":
                message = f"volume starting at line {volume.line} has no 'end-volume'"
                self.fail(token.line, message, volume.name)
            elif token.kind == "volume":
                message = (
                    f"'end-volume' missing before 'volume' (volume began at line {volume.line})"
                )
                self.fail(token.line, message, volume.name)
            else:
                expected = "expected 'option', 'subvolumes' or 'end-volume'"
                self.fail(token.line, f"{expected}, found {token.shown()}", volume.name)

    def _option(self, volume: VolumeDef, start: Token) -> None:
        key = self._word("an option key after 'option'", volume.name).text
        value = self.peek()
        if value.kind != "word":
            # Before end-volume a value is plainly missing; elsewhere a keyword may be meant.
            hint = (
                ""
                if value.kind in ("end", "end-volume")
                else " (quote a keyword to use it as a value)"
            )
            message = f"option '{key}' has no value, found {value.shown()}{hint}"
            self.fail(value.line, message, volume.name)
        self.take()
        if key in volume.options:
            first = volume.option_lines[key]
            message = f"option '{key}' given twice (first at line {first})"
            self.fail(start.line, message, volume.name)
        volume.options[key] = value.text
        volume.option_lines[key] = start.line

    def _subvolumes(self, volume: VolumeDef, start: Token) -> None:
        if volume.subvolumes_line:
            message = f"duplicate 'subvolumes' line (first at line {volume.subvolumes_line})"
            self.fail(start.line, message, volume.name)
        volume.subvolumes_line = start.line
        names = [self._word("a subvolume name after 'subvolumes'", volume.name)]
        while self.peek().kind == "word":
            names.append(self.take())
        for token in names:
            self._check_subvolume(volume, token)
            volume.subvolumes.append(token.text)

    def _check_subvolume(self, volume: VolumeDef, token: Token) -> None:
        name = token.text
        if name == volume.name:
            self.fail(token.line, "a volume cannot be its own subvolume", volume.name)
        if name in volume.subvolumes:
            self.fail(token.line, f"subvolume '{name}' listed twice", volume.name)
        if name not in self.by_name:
            message = f"subvolume '{name}' is not defined before it is used"
            self.fail(token.line, message, volume.name)


def parse_text(text: str, path: str = "<string>") -> Volfile:
    """Parse volfile text; raise VolfileError at the first mistake."""
    return _Parser(_Lexer(text, path), path).volfile()


def parse_file(path: str | os.PathLike[str]) -> Volfile:
    """Read and parse a volfile; an unreadable or non-UTF-8 file is a VolfileError too."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise VolfileError(shown, 1, f"cannot read the volfile: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise VolfileError(shown, line, "the volfile is not UTF-8 text") from None
    log.debug("parsing volfile %s", shown)
    return parse_text(text, shown)
