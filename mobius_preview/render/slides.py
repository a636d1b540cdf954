"""Drawing slides, the poster and the contact sheet with Pillow.

Text in any script is laid out by ``text`` (a Noto font chosen per character, shaped
with raqm); the fonts ship with the package, so a slide looks the same on every
machine. Captions are burnt by drawing them on the slide: a caption lasts exactly
one step, so this costs nothing at encode time.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from . import text
from .plan import Plan, Slide

BACKGROUND = (24, 28, 38)
HEADER = (44, 52, 72)
ACCENT = (255, 196, 61)
TEXT = (236, 238, 242)


def _fit_text(canvas: Image.Image, body: str, box: tuple[int, int, int, int], size: int, language: str,
              align: str) -> None:
    """Draw wrapped text in ``box``, shrinking the font until it fits."""
    left, top, right, bottom = box
    while True:
        lines = text.wrap(body, right - left, size, language=language)
        line_height = int(size * text.LINE_SPACING)
        if len(lines) * line_height <= bottom - top or size <= 10:
            break
        size = int(size * 0.85)
    max_lines = max(1, (bottom - top) // line_height)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip()[: max(0, len(lines[-1]) - 1)] + "…"
    for n, line in enumerate(lines):
        text.draw_line(canvas, (left, top + n * line_height), line, size, fill=TEXT, language=language,
                       align=align, width=right - left)


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
    """One slide at the plan's resolution; a right-to-left step is laid out mirrored."""
    w, h = plan.width, plan.height
    lang = plan.language
    rtl = text.direction(f"{slide.title} {slide.text}") == "rtl"
    canvas = Image.new("RGB", (w, h), BACKGROUND)
    d = ImageDraw.Draw(canvas)
    pad = max(8, w // 40)
    header_h = max(24, h // 8)
    d.rectangle((0, 0, w, header_h), fill=HEADER)
    title_size = max(12, header_h // 2 - 4)
    number_width = 0
    if slide.step_id is not None:  # "3 / 10" at the end of the header (the left when mirrored)
        number = f"{slide.index + 1} / {len(plan.slides)}"
        number_size = max(10, header_h // 3)
        number_width = int(text.measure(number, number_size)) + pad
        text.draw_line(canvas, (pad, (header_h - number_size) // 2), number, number_size, fill=ACCENT,
                       align="left" if rtl else "right", width=w - 2 * pad)
    title_width = w - 2 * pad - number_width
    title = text.wrap(slide.title, title_width, title_size, bold=True, language=lang)[0]
    text.draw_line(canvas, (pad + (number_width if rtl else 0), (header_h - title_size) // 2), title,
                   title_size, fill=TEXT, bold=True, language=lang, align="right" if rtl else "left",
                   width=title_width)

    caption_h = max(20, h // 7) if plan.burn_captions and slide.caption else 0
    body = (pad, header_h + pad, w - pad, h - pad - caption_h)
    if slide.image is not None:
        if rtl:  # picture on the right, text on the left
            split = body[2] - (body[2] - body[0]) * 3 // 5
            _paste_fitted(canvas, slide.image.path, (split + pad, body[1], body[2], body[3]))
            text_box = (body[0], body[1], split, body[3])
        else:
            split = body[0] + (body[2] - body[0]) * 3 // 5
            _paste_fitted(canvas, slide.image.path, (body[0], body[1], split - pad, body[3]))
            text_box = (split, body[1], body[2], body[3])
    else:
        text_box = body
    if slide.text:
        _fit_text(canvas, slide.text, text_box, max(12, h // 20), lang, "right" if rtl else "left")
    if caption_h:
        band = Image.new("RGBA", (w, caption_h), (0, 0, 0, 190))
        canvas.paste(band, (0, h - caption_h), band)
        size = max(10, caption_h // 3)
        lines = text.wrap(slide.caption, w - 2 * pad, size, language=lang)[:2]
        y = h - caption_h + (caption_h - len(lines) * int(size * 1.2)) // 2
        for line in lines:
            text.draw_line(canvas, (pad, y), line, size, fill=(255, 255, 255), language=lang,
                           align="center", width=w - 2 * pad)
            y += int(size * 1.2)
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
