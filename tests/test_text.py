"""Text in every script: the font chosen per character has it, shaping and direction,
mirrored right-to-left slides, warnings for what no font has, right-to-left captions.

Each script's slide is written to test-artifacts/scripts/ to look at.
"""

from __future__ import annotations

import itertools
import json
import unicodedata
from pathlib import Path

import pytest
from icu4py.breakers import CharacterBreaker
from PIL import Image, ImageChops

from mobius_preview import render
from mobius_preview.render import captions, slides, text

ASSETS = Path(__file__).resolve().parent.parent / "schemas" / "examples" / "assets"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "scripts"

# (language tag, title, step text, the font its script must come from)
SCRIPTS = {
    "latin": ("en", "Setting up", "Place the robber on the desert. Ça marche, señor!", "Noto Sans"),
    "greek": ("el", "Προετοιμασία", "Τοποθετήστε τον ληστή στην έρημο.", "Noto Sans"),
    "cyrillic": ("ru", "Подготовка", "Поставьте разбойника в пустыню. Съешь же ещё булок.", "Noto Sans"),
    "chinese-simplified": ("zh-Hans", "准备", "把强盗放在沙漠上。每位玩家放置两个定居点。", "Noto Sans CJK SC"),
    "chinese-traditional": ("zh-Hant", "準備", "把強盜放在沙漠上。每位玩家放置兩個定居點。", "Noto Sans CJK TC"),
    "japanese": ("ja", "準備", "盗賊を砂漠に置きます。プレイヤーは開拓地を二つ置きます。", "Noto Sans CJK JP"),
    "korean": ("ko", "준비", "도둑을 사막에 놓으세요. 각 플레이어는 정착지 두 개를 놓습니다.", "Noto Sans CJK KR"),
    "arabic": ("ar", "الإعداد", "ضع اللص على الصحراء. كل لاعب يضع 2 مستوطنة.", "Noto Sans Arabic"),
    "hebrew": ("he", "הכנה", "הניחו את השודד על המדבר. כל שחקן מניח 2 יישובים.", "Noto Sans Hebrew"),
    "devanagari": ("hi", "तैयारी", "डाकू को रेगिस्तान पर रखें। हर खिलाड़ी दो बस्तियाँ रखता है।", "Noto Sans"),
    "thai": ("th", "การเตรียม", "วางโจรบนทะเลทราย ผู้เล่นแต่ละคนวางนิคมสองแห่ง", "Noto Sans Thai"),
    "emoji": ("en", "Trading 🐑", "Roll the dice 🎲 and trade 🐑🌾 👍🏽 👨‍👩‍👧 🇫🇷 ❤️", "Noto Color Emoji"),
}


def job(language: str, title: str, body: str, *, image: bool = True, burn: bool = True) -> dict:
    step = {"id": "s1", "title": title, "text": body, "durationSec": 2}
    if image:
        step["image"] = "board"
    return {
        "jobId": "t-text", "projectId": "proj-catan-demo", "requestId": "r", "dryRun": True,
        "previewRequest": {
            "title": title, "steps": [step],
            "assets": [{"id": "board", "type": "image", "path": "images/board.png"}] if image else [],
            "audio": {}, "options": {"resolution": "1280x720", "language": language, "burnCaptions": burn},
        },
    }


def plan_of(payload: dict) -> render.Plan:
    return render.prepare(render.identify(payload, ASSETS), 900).plan


def _drawn(cluster: str) -> bool:
    return not cluster.isspace() and unicodedata.category(cluster[0]) != "Cc"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_character_is_drawn_from_a_font_that_has_it(name):
    if not text.SHAPING:
        pytest.skip("Pillow's raqm is unavailable here (libfribidi missing): no shaping to check")
    language, title, body, family = SCRIPTS[name]
    plan = plan_of(job(language, title, body))
    slide = plan.slides[0]
    for line in (slide.title, slide.text, slide.caption):
        for run in text.runs(line, plan.language):
            assert run.face.name != "DejaVu Sans", (name, run)
            for cluster in text.clusters(run.text):
                if _drawn(cluster):
                    assert ord(cluster[0]) in run.face.cmap, (name, cluster, run.face.name)
    assert family in {run.face.name for run in text.runs(body, plan.language)}
    assert text.uncovered(body, plan.language) == []

    picture = slides.draw(plan, slide)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    picture.save(ARTIFACTS / f"{name}.png")
    # Something was drawn in the text area (not only the background and the picture).
    blank = slides.draw(plan_of(job(language, title, "")), plan_of(job(language, title, "")).slides[0])
    assert ImageChops.difference(picture, blank).getbbox() is not None


def _ink_columns(picture: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, int]:
    """Leftmost and rightmost column of text in ``box`` (pixels far from the background)."""
    region = picture.crop(box).convert("L")
    background = region.getpixel((0, 0))
    mask = region.point(lambda v: 255 if abs(v - background) > 60 else 0)
    left, _, right, _ = mask.getbbox()
    return box[0] + left, box[0] + right


def test_a_right_to_left_step_is_laid_out_mirrored():
    if not text.SHAPING:
        pytest.skip("Pillow's raqm is unavailable here (libfribidi missing)")
    arabic = plan_of(job("ar", *SCRIPTS["arabic"][1:3], burn=False))
    english = plan_of(job("en", *SCRIPTS["latin"][1:3], burn=False))
    rtl, ltr = slides.draw(arabic, arabic.slides[0]), slides.draw(english, english.slides[0])
    w, h = rtl.size
    header = (0, 10, w, h // 8 - 10)
    # Title: starts at the left margin in English, ends at the right margin in Arabic.
    assert _ink_columns(ltr, header)[0] < w // 10
    assert _ink_columns(rtl, header)[1] > w - w // 10 - 5
    # Picture on the left in English, on the right in Arabic (the text takes the other side).
    body = (0, h // 8 + 40, w, h - 40)
    ltr_text = _ink_columns(ltr, (w * 3 // 5, body[1], w, body[3]))
    rtl_text = _ink_columns(rtl, (0, body[1], w * 2 // 5, body[3]))
    assert ltr_text[0] >= w * 3 // 5 and rtl_text[1] <= w * 2 // 5
    # The Arabic lines end at the right edge of their box (right-aligned).
    assert rtl_text[1] > w * 2 // 5 - 20


def test_arabic_is_shaped_not_drawn_letter_by_letter():
    if not text.SHAPING:
        pytest.skip("Pillow's raqm is unavailable here (libfribidi missing)")
    face = text.chain("ar")[1].font(40)
    word = "مستوطنة"
    # Joined (contextual) forms make the word narrower than its isolated letters side by side.
    assert face.getlength(word, direction="rtl") < sum(face.getlength(c) for c in word)


def test_wrap_fits_long_words_and_non_latin_text():
    body = "Αυτό είναι ελληνικό κείμενο. Съешь же ещё этих мягких французских булок. " + "x" * 300
    lines = text.wrap(body, 300, 24)
    assert all(text.measure(line, 24) <= 300 for line in lines)
    assert "".join(lines).replace(" ", "") == body.replace(" ", "")
    cjk = SCRIPTS["chinese-simplified"][2] * 4  # no spaces: broken between characters
    lines = text.wrap(cjk, 200, 24, language="zh-Hans")
    assert len(lines) > 1 and "".join(lines) == cjk
    assert all(text.measure(line, 24, language="zh-Hans") <= 200 for line in lines)


def test_a_character_no_font_has_is_reported_in_the_manifest(tmp_path):
    # Tibetan, Ethiopic and Cherokee: scripts no shipped font covers.
    body = "Roll ཀ then ሀ and Ꭰ"
    assert text.uncovered(body) == ["ཀ", "ሀ", "Ꭰ"]
    assert [r.face.name for r in text.runs("ཀ")] == ["DejaVu Sans"]
    prepared = render.prepare(render.identify(job("en", "Odd letters", body), ASSETS), 900)
    out = tmp_path / "out"
    out.mkdir()
    data = render.render(prepared, out, timeout=60)
    saved = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert saved["warnings"] == data["warnings"]
    (warning,) = data["warnings"]
    assert warning.startswith("step 's1': no shipped font has U+0F40 TIBETAN LETTER KA, U+1200")
    assert "drawn from DejaVu Sans" in warning
    assert render.text_warnings(plan_of(job("ja", *SCRIPTS["japanese"][1:3]))) == []


def test_right_to_left_captions_read_right_to_left_in_srt_and_vtt(tmp_path):
    payload = job("he", "2 כללים", "2 שחקנים מניחים יישובים.", image=False)
    payload["dryRun"] = False  # a real render writes the caption files
    payload["previewRequest"]["options"].update(resolution="160x90", fps=5)
    prepared = render.prepare(render.identify(payload, ASSETS), 900)
    out = tmp_path / "out"
    out.mkdir()
    render.render(prepared, out, timeout=60)
    srt, vtt = captions.srt(prepared.plan), captions.vtt(prepared.plan)
    for document, name in ((srt, "captions.srt"), (vtt, "captions.vtt")):
        cue = next(line for line in document.splitlines() if "שחקנים" in line)
        # Starts with a digit, whose direction is weak: the mark makes the cue right-to-left.
        assert cue == captions.RLM + "2 שחקנים מניחים יישובים."
        # The file a player reads: UTF-8 without a byte-order mark, the mark and the cue in it.
        written = (out / name).read_bytes()
        assert written.decode("utf-8") == document, name
        assert ("\n" + cue + "\n").encode("utf-8") in written and not written.startswith(b"\xef\xbb\xbf")
    latin = plan_of(job("en", "Rules", "Two players place settlements."))
    assert captions.RLM not in captions.srt(latin) + captions.vtt(latin)


# Line breaking (UAX #14 by ICU, with the CJK rules): one text per script, wrapped at
# every width from a few characters to the whole text, so that any width where a
# wrong break is possible is tried. The oracle is written out here, not asked of ICU.
CLOSING = set("。，、．：；！？）」』】〕〉》”’.,:;!?)]}،؛") | set("ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶー々")
OPENING = set("「『（【〔〈《“‘([{")
LINE_BREAK_SAMPLES = {
    # name: (language, text, known break positions or None)
    "chinese": ("zh-Hans", "我们今天学习如何设置游戏。首先，把棋盘放在桌子中间，然后每位玩家拿一种颜色的棋子。"
                           "（注意：强盗放在沙漠上。）", None),
    "japanese": ("ja", "「カタン」の準備をしましょう。ちょっと待ってください、ジャンプしてシャッフルします。"
                       "『開拓地』を二つ置きます。", None),
    # วัน|นี้|เรา|จะ|เรียน|รู้|วิธี|ตั้ง|ค่า|เกม|กระดาน (a Thai reader's segmentation)
    "thai": ("th", "วันนี้เราจะเรียนรู้วิธีตั้งค่าเกมกระดาน",
             ("วัน", "นี้", "เรา", "จะ", "เรียน", "รู้", "วิธี", "ตั้ง", "ค่า", "เกม", "กระดาน")),
    "korean": ("ko", "도둑을 사막에 놓으세요. 각 플레이어는 정착지 두 개를 놓습니다. (주사위를 굴리세요!)", None),
    # Right to left, with words longer than the narrowest lines
    "arabic": ("ar", "ضع اللص على الصحراء، ثم يضع كل لاعب (مستوطنتين) على اللوح، والمستوطنات.", None),
    "hebrew": ("he", "הניחו את השודד על המדבר. כל שחקן מניח (שני) יישובים! ההתיישבויות.", None),
    "mixed-english": ("en", "Open 设置 → select “Catan” (the base game) and press OK。下一步：“Step 2”, carefully!",
                      None),
}
SIZE = 30


def _line_ends(paragraph: str, lines: list[str]) -> list[int]:
    """Where each line but the last ends in ``paragraph`` (spaces between lines skipped)."""
    ends, pos = [], 0
    for line in lines:
        while paragraph.startswith(" ", pos):
            pos += 1
        assert paragraph.startswith(line, pos), (line, paragraph[pos:])
        pos += len(line)
        ends.append(pos)
    assert paragraph[pos:].strip() == ""
    return ends[:-1]


def _widths(body: str, language: str) -> range:
    return range(SIZE * 4, int(text.measure(body, SIZE, language=language)) + SIZE, SIZE // 6)


def _save_slide(name: str, language: str, body: str) -> None:
    plan = plan_of(job(language, "分行 · Line breaks", body * 2))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    slides.draw(plan, plan.slides[0]).save(ARTIFACTS / f"linebreak-{name}.png")


@pytest.mark.slow(4)
@pytest.mark.parametrize("name", sorted(LINE_BREAK_SAMPLES))
def test_lines_break_where_unicode_and_the_cjk_rules_allow(name):
    language, body, words = LINE_BREAK_SAMPLES[name]
    breaks_seen = set()
    for width in _widths(body, language):
        lines = text.wrap(body, width, SIZE, language=language)
        assert all(text.measure(line, SIZE, language=language) <= width for line in lines), (width, lines)
        assert all(lines) and lines == [line.strip() for line in lines], (width, lines)
        for before, after in itertools.pairwise(lines):
            assert after[0] not in CLOSING, (width, lines)  # no closing punctuation starts a line
            assert before[-1] not in OPENING, (width, lines)  # no opening one ends a line
        if name in ("arabic", "hebrew"):
            assert all(text.direction(line) == "rtl" for line in lines), (width, lines)
        ends = _line_ends(body, lines)
        breaks_seen.update(ends)
        if words is not None:  # Thai: only between words
            word_ends = {sum(len(w) for w in words[:n]) for n in range(1, len(words))}
            assert set(ends) <= word_ends, (width, lines)
    assert len(breaks_seen) > 3  # the sweep did break lines, in several places
    _save_slide(name, language, body)


def test_a_word_longer_than_the_line_breaks_between_grapheme_clusters():
    family, flag, thai = "👨‍👩‍👧", "🇫🇷", "ที่นี่"
    for body in (family * 8 + flag * 6, "x" * 40 + "。", "「" + "x" * 40, thai * 12, "स्थापित" * 10):
        clusters = list(CharacterBreaker(body, "en"))
        ends = {sum(len(c) for c in clusters[:n]) for n in range(1, len(clusters))}
        for width in range(int(SIZE * 2.5), int(SIZE * 8), SIZE // 2):
            lines = text.wrap(body, width, SIZE)
            assert len(lines) > 1 and "".join(lines) == body, (body, width)
            assert set(_line_ends(body, lines)) <= ends, (body, width, lines)  # never inside a cluster
            assert all(text.measure(line, SIZE) <= width or len(list(CharacterBreaker(line, "en"))) == 1
                       for line in lines), (body, width, lines)
            assert lines[-1] != "。" and lines[0] != "「", (body, width, lines)
