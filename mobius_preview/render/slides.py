"""Drawing slides, the poster and the contact sheet with Pillow.

The fonts ship inside the package (DejaVu Sans), so a slide looks the same on every
machine. Captions are burnt by drawing them on the slide: a caption lasts exactly
one step, so this costs nothing at encode time.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..data import fonts_dir
from .plan import Plan, Slide

BACKGROUND = (24, 28, 38)
HEADER = (44, 52, 72)
ACCENT = (255, 196, 61)
TEXT = (236, 238, 242)


@lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(fonts_dir() / name), size)


def wrap(text: str, face: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap that also breaks words longer than a line."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if face.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            while face.getlength(word) > width:
                cut = len(word)
                while cut > 1 and face.getlength(word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _fit_text(draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int], size: int) -> None:
    """Draw wrapped text in ``box``, shrinking the font until it fits."""
    left, top, right, bottom = box
    while True:
        face = font(size)
        lines = wrap(text, face, right - left)
        line_height = int(size * 1.3)
        if len(lines) * line_height <= bottom - top or size <= 10:
            break
        size = int(size * 0.85)
    max_lines = max(1, (bottom - top) // line_height)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip()[: max(0, len(lines[-1]) - 1)] + "…"
    for n, line in enumerate(lines):
        draw.text((left, top + n * line_height), line, font=face, fill=TEXT)


def _paste_fitted(canvas: Image.Image, path: Path, box: tuple[int, int, int, int]) -> None:
    """Scale an image into ``box`` keeping its aspect ratio (letterboxed, centred)."""
    left, top, right, bottom = box
    with Image.open(path) as source:
        scale = min((right - left) / source.width, (bottom - top) / source.height)
        size = (max(1, int(source.width * scale)), max(1, int(source.height * scale)))
        source.draft("RGB", size)  # JPEG: decode at a reduced scale when it can
        im = source.convert("RGB")
    # reducing_gap: shrink by whole factors first, then Lanczos the rest (same look, faster)
    im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas.paste(im, (left + (right - left - size[0]) // 2, top + (bottom - top - size[1]) // 2))


def draw(plan: Plan, slide: Slide) -> Image.Image:
    """One slide at the plan's resolution."""
    w, h = plan.width, plan.height
    canvas = Image.new("RGB", (w, h), BACKGROUND)
    d = ImageDraw.Draw(canvas)
    pad = max(8, w // 40)
    header_h = max(24, h // 8)
    d.rectangle((0, 0, w, header_h), fill=HEADER)
    title_face = font(max(12, header_h // 2 - 4), bold=True)
    number_width = 0
    if slide.step_id is not None:  # "3 / 10", right-aligned in the header
        number = f"{slide.index + 1} / {len(plan.slides)}"
        number_face = font(max(10, header_h // 3))
        number_width = int(number_face.getlength(number)) + pad
        d.text((w - pad - number_width + pad, (header_h - number_face.size) // 2), number,
               font=number_face, fill=ACCENT)
    title = wrap(slide.title, title_face, w - 2 * pad - number_width)[0]
    d.text((pad, (header_h - title_face.size) // 2), title, font=title_face, fill=TEXT)

    caption_h = max(20, h // 7) if plan.burn_captions and slide.caption else 0
    body = (pad, header_h + pad, w - pad, h - pad - caption_h)
    if slide.image is not None:
        split = body[0] + (body[2] - body[0]) * 3 // 5
        _paste_fitted(canvas, slide.image.path, (body[0], body[1], split - pad, body[3]))
        text_box = (split, body[1], body[2], body[3])
    else:
        text_box = body
    if slide.text:
        _fit_text(d, slide.text, text_box, max(12, h // 20))
    if caption_h:
        band = Image.new("RGBA", (w, caption_h), (0, 0, 0, 190))
        canvas.paste(band, (0, h - caption_h), band)
        face = font(max(10, caption_h // 3))
        lines = wrap(slide.caption, face, w - 2 * pad)[:2]
        y = h - caption_h + (caption_h - len(lines) * int(face.size * 1.2)) // 2
        for line in lines:
            x = (w - face.getlength(line)) // 2
            d.text((x, y), line, font=face, fill=(255, 255, 255))
            y += int(face.size * 1.2)
    return canvas


def contact_sheet(thumbs: list[Image.Image], width: int = 1280) -> Image.Image:
    """All slides as a grid of thumbnails, for a reviewer's first look."""
    cols = min(5, max(1, len(thumbs)))
    rows = math.ceil(len(thumbs) / cols)
    gap = 8
    tw = (width - gap * (cols + 1)) // cols
    th = max(1, round(tw * thumbs[0].height / thumbs[0].width))
    sheet = Image.new("RGB", (width, rows * th + gap * (rows + 1)), BACKGROUND)
    for n, thumb in enumerate(thumbs):
        x = gap + (n % cols) * (tw + gap)
        y = gap + (n // cols) * (th + gap)
        sheet.paste(thumb.resize((tw, th), Image.Resampling.BILINEAR), (x, y))
    return sheet
