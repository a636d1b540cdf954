"""Text in any script on a slide: a font chosen per character, shaped, in reading order.

A fallback chain of Noto fonts (Latin, Greek and Cyrillic; Arabic; Hebrew;
Devanagari; Thai; Chinese, Japanese and Korean; colour emoji), then DejaVu Sans as
the last resort. Each character takes the first font whose character map has it, and
consecutive characters of one font form a run that Pillow lays out with raqm
(HarfBuzz shaping, FriBiDi direction). A paragraph whose strong characters are mostly
right-to-left is laid out from the right, its runs in reverse order. A character no
font has is drawn from the last resort (a box) and reported by ``uncovered``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from types import ModuleType

import fontpkg_noto_sans
import fontpkg_noto_sans_arabic
import fontpkg_noto_sans_devanagari
import fontpkg_noto_sans_thai
import noto_cjk_sans_otc
from fontTools.ttLib import TTFont
from icu4py.breakers import CharacterBreaker, LineBreaker
from PIL import Image, ImageDraw, ImageFont, features

from ..data import fonts_dir

EMOJI_PIXELS = 109  # NotoColorEmoji is a bitmap font with one strike: drawn at 109 px, then scaled
LINE_SPACING = 1.3
# Code points that belong to the character before them (one cluster): combining
# marks are found by category; these are the joiners, selectors and modifiers of emoji.
_JOINERS = {0x200C, 0x200D, 0x20E3, *range(0xFE00, 0xFE10), *range(0x1F3FB, 0x1F400),
            *range(0xE0020, 0xE0080)}
_REGIONAL = range(0x1F1E6, 0x1F200)
_SPACES = re.compile(r"[ \t]+")  # collapsed to one space; other spaces (no-break, ideographic) kept
SHAPING = features.check("raqm")  # False only where libfribidi is missing: see the manifest warning


@dataclass(frozen=True)
class Face:
    """One font of the chain: where it is, which face of a collection, what it covers."""

    name: str
    path: Path
    index: int = 0
    bold_path: Path | None = None  # a separate bold file; else the variable font's "Bold"
    emoji: bool = False

    @cached_property
    def cmap(self) -> frozenset[int]:
        with TTFont(str(self.path), fontNumber=self.index, lazy=True) as font:
            return frozenset(font.getBestCmap())

    def covers(self, cluster: str) -> bool:
        return ord(cluster[0]) in self.cmap

    def font(self, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
        return _load(self, EMOJI_PIXELS if self.emoji else size, bold and not self.emoji)


@lru_cache(maxsize=256)
def _load(face: Face, size: int, bold: bool) -> ImageFont.FreeTypeFont:
    path = face.bold_path if bold and face.bold_path else face.path
    layout = ImageFont.Layout.RAQM if SHAPING else ImageFont.Layout.BASIC
    font = ImageFont.truetype(str(path), size, index=face.index, layout_engine=layout)
    if bold and face.bold_path is None:
        try:
            font.set_variation_by_name("Bold")
        except OSError:  # not a variable font (CJK has one weight here): regular it is
            pass
    return font


def _variable(package: ModuleType) -> Path:
    """The upright variable font of a fontpkg package (its width and weight axes)."""
    files = Path(package.ROOT) / "files"
    return next(p for p in files.glob("*[[]wdth,wght[]].ttf") if "Italic" not in p.name)


@lru_cache(maxsize=1)
def _faces() -> dict[str, Face]:
    fonts = fonts_dir()
    cjk = Path(str(noto_cjk_sans_otc.FONT_PATH))
    faces = [
        Face("Noto Sans", _variable(fontpkg_noto_sans)),
        Face("Noto Sans Arabic", _variable(fontpkg_noto_sans_arabic)),
        Face("Noto Sans Hebrew", fonts / "NotoSansHebrew-Regular.ttf",
             bold_path=fonts / "NotoSansHebrew-Bold.ttf"),
        Face("Noto Sans Devanagari", _variable(fontpkg_noto_sans_devanagari)),
        Face("Noto Sans Thai", _variable(fontpkg_noto_sans_thai)),
        *(Face(f"Noto Sans CJK {v}", cjk, index=i) for i, v in enumerate(("JP", "KR", "SC", "TC", "HK"))),
        Face("Noto Color Emoji", fonts / "NotoColorEmoji.ttf", emoji=True),
        Face("DejaVu Sans", fonts / "DejaVuSans.ttf", bold_path=fonts / "DejaVuSans-Bold.ttf"),
    ]
    return {face.name: face for face in faces}


def _cjk_variant(language: str, sample: str) -> str:
    """Han characters look different in Chinese (simplified, traditional), Japanese and
    Korean: the language tag chooses; without one, kana or hangul in the text do."""
    tag = language.lower()
    if tag.startswith("ja") or (not tag and any(0x3040 <= ord(c) <= 0x30FF for c in sample)):
        return "JP"
    if tag.startswith("ko") or (not tag and any(0xAC00 <= ord(c) <= 0xD7AF for c in sample)):
        return "KR"
    if tag.startswith("zh") and ("hant" in tag or tag.endswith("-tw")):
        return "TC"
    if tag.startswith("zh") and (tag.endswith("-hk") or tag.endswith("-mo")):
        return "HK"
    return "SC"


def chain(language: str = "", sample: str = "") -> tuple[Face, ...]:
    """The fonts to try, in order, for ``sample`` in ``language`` (a BCP 47 tag)."""
    return _chain(_cjk_variant(language, sample))


@lru_cache(maxsize=8)
def _chain(variant: str) -> tuple[Face, ...]:
    faces = _faces()
    order = ["Noto Sans", "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Thai",
             f"Noto Sans CJK {variant}", "Noto Color Emoji", "DejaVu Sans"]
    return tuple(faces[name] for name in order)


@lru_cache(maxsize=8192)
def _text_face(cluster: str, variant: str) -> Face | None:
    """The first font of the chain, emoji aside, that has ``cluster``: found once per
    character, not at each of the many measurements line breaking makes."""
    return next((f for f in _chain(variant) if not f.emoji and f.covers(cluster)), None)


def last_resort() -> Face:
    return _faces()["DejaVu Sans"]


def warm() -> None:
    """Read every character map now (~0.2 s), so forked render processes share them."""
    for face in _faces().values():
        face.cmap  # noqa: B018


def clusters(text: str) -> list[str]:
    """Split into what must stay together: a character with its marks, joiners and
    selectors (emoji sequences), or a pair of regional indicators (a flag)."""
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        glued = out and (
            unicodedata.category(ch).startswith("M") or cp in _JOINERS or ord(out[-1][-1]) == 0x200D
            or (cp in _REGIONAL and len(out[-1]) == 1 and ord(out[-1]) in _REGIONAL)
        )
        if glued:
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _wants_emoji(cluster: str) -> bool:
    cp = ord(cluster[0])
    return "\ufe0f" in cluster or cp >= 0x1F000 or "\u200d" in cluster


def _neutral(cluster: str) -> bool:
    return unicodedata.category(cluster[0])[0] in "ZPS" or cluster[0] in "0123456789"


@dataclass(frozen=True)
class Run:
    text: str
    face: Face


def runs(text: str, language: str = "") -> list[Run]:
    """The text as runs of one font each, in logical (reading) order."""
    variant = _cjk_variant(language, text)
    emoji = next(f for f in _chain(variant) if f.emoji)
    out: list[Run] = []
    for cluster in clusters(text):
        current = out[-1].face if out else None
        if current is not None and not current.emoji and _neutral(cluster) and current.covers(cluster):
            face = current  # spaces and punctuation stay in the run they sit in
        elif _wants_emoji(cluster) and emoji.covers(cluster):
            face = emoji
        else:
            found = _text_face(cluster, variant)
            face = found if found is not None else emoji if emoji.covers(cluster) else last_resort()
        if out and out[-1].face is face:
            out[-1] = Run(out[-1].text + cluster, face)
        else:
            out.append(Run(cluster, face))
    return out


def uncovered(text: str, language: str = "") -> list[str]:
    """Characters of ``text`` that no font of the chain has (drawn as boxes)."""
    faces = chain(language, text)
    seen: dict[str, None] = {}
    for cluster in clusters(text):
        ch = cluster[0]
        drawn = not ch.isspace() and unicodedata.category(ch) != "Cc"
        if drawn and not any(f.covers(cluster) for f in faces):
            seen[ch] = None
    return list(seen)


def _strong(text: str) -> str | None:
    """"rtl" when most strong characters are right-to-left (Arabic, Hebrew), "ltr" when
    most are left-to-right, None when there are none (spaces, digits, punctuation)."""
    rtl = ltr = 0
    for ch in text:
        kind = unicodedata.bidirectional(ch)
        if kind in ("R", "AL"):
            rtl += 1
        elif kind == "L":
            ltr += 1
    return None if rtl == ltr == 0 else "rtl" if rtl > ltr else "ltr"


def direction(text: str) -> str:
    """The paragraph's direction: "rtl" when most strong characters are right-to-left."""
    return _strong(text) or "ltr"


def _run_direction(run: Run, paragraph: str) -> str | None:
    """A run's own direction; one of neutrals only (". ", "2 ") takes the paragraph's."""
    if not SHAPING:
        return None
    return _strong(run.text) or paragraph


def _run_width(run: Run, size: int, bold: bool, paragraph: str = "ltr") -> float:
    if run.face.emoji:
        return len(clusters(run.text)) * size * 1.15
    return run.face.font(size, bold).getlength(run.text, direction=_run_direction(run, paragraph))


def measure(text: str, size: int, bold: bool = False, language: str = "") -> float:
    """Width in pixels of one line of ``text``."""
    paragraph = direction(text)
    return sum(_run_width(run, size, bold, paragraph) for run in runs(text, language))


def line_locale(language: str = "") -> str:
    """The ICU locale that breaks lines for ``language`` (a BCP 47 tag): its own rules
    (Thai by dictionary, ...) with ``lb=strict``, the classic CJK rules (kinsoku) that
    also keep small kana and the long-vowel mark off a line's start."""
    return f"{language.replace('-', '_') or 'und'}@lb=strict"


@lru_cache(maxsize=1024)
def _segments(paragraph: str, locale: str) -> tuple[str, ...]:
    """The paragraph cut at its line-break opportunities (UAX #14 as ICU tailors it for
    ``locale``); a segment keeps its trailing spaces. Cached: a slide's text is wrapped
    again at each font size tried."""
    return tuple(LineBreaker(paragraph, locale)) if paragraph else ()


@lru_cache(maxsize=1024)
def _may_break(before: str, after: str, locale: str) -> bool:
    """Whether ICU would let a line end with cluster ``before`` and the next start with
    ``after`` if a break were needed between them: it is asked about each next to an
    ideograph, which breaks on both sides of most characters but not before "。", "」"
    or "ァ" nor after "「" or "("."""
    ends = next(iter(LineBreaker(f"{before}\u4e00", locale))) == before
    starts = next(iter(LineBreaker(f"\u4e00{after}", locale))) == "\u4e00"
    return ends and starts


def _split_long(segment: str, fits: Callable[[str], bool], locale: str) -> list[str]:
    """A segment wider than the line broken between grapheme clusters (never inside
    one), each piece as long as fits, not cut where a piece would start with closing
    or end with opening punctuation (unless there is no other cut)."""
    parts = list(CharacterBreaker(segment, locale))
    pieces: list[str] = []
    while parts and not fits("".join(parts)):
        cut = 1
        while cut < len(parts) and fits("".join(parts[: cut + 1])):
            cut += 1
        cut = next((c for c in range(cut, 0, -1) if _may_break(parts[c - 1], parts[c], locale)), cut)
        pieces.append("".join(parts[:cut]))
        parts = parts[cut:]
    return [*pieces, "".join(parts)] if parts else pieces


@dataclass
class _Lines:
    """Greedy filling of lines with break-opportunity segments. A segment's width is
    measured alone and added up: a line is measured whole (shaped, in context) only
    when that sum comes near the edge and once when it is closed, so the cost grows
    with the text, not with the text times the line (CJK fonts are slow to shape)."""

    width: int
    width_of: Callable[[str], float]  # one line, shaped
    locale: str
    slack: float  # how far the sum of the parts may be from the whole (kerning, context)
    lines: list[str] = field(default_factory=list)
    line: list[str] = field(default_factory=list)
    estimate: float = 0.0

    def fits(self, text: str) -> bool:
        return self.width_of(text.rstrip()) <= self.width

    def add(self, segment: str, pending: list[str]) -> None:
        """Put ``segment`` on the current line, or close the line and start a new one."""
        cost = self.width_of(segment)
        if self.line:  # far from the edge by the sum: it fits (checked when the line closes)
            near = self.estimate + cost > self.width - self.slack
            room = not near or self.fits("".join(self.line) + segment)
        else:
            room = self.fits(segment)
        if room:
            self.line.append(segment)
            self.estimate += cost
        elif self.line:
            pending.append(segment)  # first: what the line gives back comes before it
            self.close(pending)
        else:  # alone and wider than a line
            *full, rest = _split_long(segment, self.fits, self.locale)
            self.lines.extend(piece.rstrip() for piece in full)
            self.line, self.estimate = [rest], self.width_of(rest)

    def close(self, pending: list[str]) -> None:
        """End the line, giving back its last segments if the sum misjudged the whole."""
        while len(self.line) > 1 and not self.fits("".join(self.line)):
            pending.append(self.line.pop())
        self.lines.append("".join(self.line).rstrip())
        self.line, self.estimate = [], 0.0


def _wrap_paragraph(paragraph: str, lines: _Lines) -> list[str]:
    """Each line takes as many segments as fit (trailing spaces hang past the edge); a
    segment wider than a line is split between grapheme clusters."""
    pending = list(reversed(_segments(paragraph, lines.locale)))
    if not pending:
        lines.close(pending)  # an empty paragraph is an empty line
    while pending:
        lines.add(pending.pop(), pending)
        if not pending:
            lines.close(pending)  # the last line (it may give segments back)
    return lines.lines


def wrap(text: str, width: int, size: int, bold: bool = False, language: str = "") -> list[str]:
    """Lines of at most ``width`` pixels, broken where Unicode's line-breaking algorithm
    (UAX #14, by ICU, tailored for ``language``) allows: between words, between CJK
    characters but never before closing or after opening punctuation, Thai between
    dictionary words. Runs of spaces become one; each line in the text is a paragraph."""
    locale = line_locale(language)

    def width_of(line: str) -> float:
        return measure(line, size, bold, language)

    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        filler = _Lines(width, width_of, locale, slack=size / 4)
        lines.extend(_wrap_paragraph(_SPACES.sub(" ", paragraph).strip(), filler))
    return lines


def draw_line(canvas: Image.Image, xy: tuple[float, float], text: str, size: int, *,
              fill: tuple[int, int, int], bold: bool = False, language: str = "",
              align: str = "left", width: float = 0) -> None:
    """Draw one line with its top at ``xy[1]``: from ``xy[0]`` to the right ("left"),
    ending at ``xy[0] + width`` ("right") or centred in that width ("center").
    A right-to-left paragraph places its runs from the right."""
    parts = runs(text, language)
    paragraph = direction(text)
    widths = [_run_width(run, size, bold, paragraph) for run in parts]
    total = sum(widths)
    x, top = xy
    if align == "right":
        x += width - total
    elif align == "center":
        x += (width - total) / 2
    if paragraph == "rtl":
        parts, widths = parts[::-1], widths[::-1]
    draw = ImageDraw.Draw(canvas)
    for run, w in zip(parts, widths, strict=True):
        if run.face.emoji:
            _draw_emoji(canvas, (x, top), run.text, size)
        else:
            font = run.face.font(size, bold)
            # Anchor "ls" (left, baseline) at one baseline for every font of the line.
            draw.text((x, top + size), run.text, font=font, fill=fill, anchor="ls",
                      direction=_run_direction(run, paragraph))
        x += w


def _draw_emoji(canvas: Image.Image, xy: tuple[float, float], text: str, size: int) -> None:
    face = _faces()["Noto Color Emoji"]
    font = face.font(size)
    x, top = xy
    for cluster in clusters(text):
        tile = Image.new("RGBA", (int(EMOJI_PIXELS * 1.3), int(EMOJI_PIXELS * 1.3)), (0, 0, 0, 0))
        ImageDraw.Draw(tile).text((0, 0), cluster, font=font, embedded_color=True)
        box = tile.getbbox()
        if box:
            glyph = tile.crop(box)
            scale = size / EMOJI_PIXELS
            glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
                                 Image.Resampling.LANCZOS)
            canvas.paste(glyph, (round(x), round(top + size * 0.15)), glyph)
        x += size * 1.15
