"""Digit glyphs from every usable font on the machine, rendered once into an atlas.

Font variety is what keeps the synthetic digits from being memorised by shape, so the
generator takes every scalable font it can find with real digit glyphs: Pillow's built-in
scalable default, the DejaVu/STIX/Computer Modern TTFs that ship inside matplotlib, and
text fonts under /usr/share/fonts. Symbol and display-subset fonts are excluded by name
and by checking that the ten rendered digits are distinct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

GLYPH_HEIGHT = 56  # px of the digit band in the atlas; >= the largest digit drawn at 2x supersampling
_RENDER_SIZE = 96  # font size used to rasterise before scaling the band to GLYPH_HEIGHT
_TEXT_FONTS = re.compile(
    r"^(DejaVu(Sans|Serif)[\w-]*|STIXGeneral\w*|cm(r|ss|tt)10|Liberation(Sans|Serif|Mono)[\w-]*"
    r"|Free(Sans|Serif|Mono)[\w-]*|Noto(Sans|Serif|Mono)-[\w-]+|Ubuntu[\w-]*)\.(ttf|otf)$"
)
SYSTEM_FONT_DIR = Path("/usr/share/fonts")


@dataclass(frozen=True)
class GlyphAtlas:
    """glyphs[f][d]: float32 (GLYPH_HEIGHT, width) ink coverage in [0, 1] of digit d in font f."""

    names: tuple[str, ...]
    glyphs: tuple[tuple[np.ndarray, ...], ...]

    @property
    def max_width(self) -> int:
        return max(g.shape[1] for font in self.glyphs for g in font)


def font_files() -> list[Path]:
    """Text fonts from matplotlib and /usr/share/fonts, one per file name (sorted, so stable)."""
    found: dict[str, Path] = {}
    roots = [Path(matplotlib.get_data_path()) / "fonts" / "ttf", SYSTEM_FONT_DIR]
    for root in roots:
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if _TEXT_FONTS.match(path.name):
                    found.setdefault(path.name, path)
    return [found[name] for name in sorted(found)]


def _render_band(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> list[np.ndarray] | None:
    """The ten digits cropped to their own width and the font's common digit band, or None if unusable."""
    boxes = [font.getbbox(str(d)) for d in range(10)]
    top, bottom = min(b[1] for b in boxes), max(b[3] for b in boxes)
    if bottom - top < 8:
        return None
    glyphs = []
    for d, (left, _, right, _) in enumerate(boxes):
        if right - left < 2:
            return None
        canvas = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(canvas).text((-left, -top), str(d), fill=255, font=font)
        width = max(2, round((right - left) * GLYPH_HEIGHT / (bottom - top)))
        glyphs.append(np.asarray(canvas.resize((width, GLYPH_HEIGHT), Image.BILINEAR), np.float32) / 255.0)
    distinct = len({np.round(g, 1).tobytes() for g in glyphs}) == 10  # .notdef boxes are all alike
    return glyphs if distinct and all(g.max() > 0.5 for g in glyphs) else None


@lru_cache(maxsize=1)
def glyph_atlas() -> GlyphAtlas:
    """Every usable font's digits; Pillow's built-in scalable font first (always present)."""
    candidates = [("pillow-default", None)] + [(path.stem, path) for path in font_files()]
    names, glyphs = [], []
    for name, path in candidates:
        try:
            font = ImageFont.truetype(str(path), _RENDER_SIZE) if path else ImageFont.load_default(size=_RENDER_SIZE)
        except OSError:  # unreadable or unsupported font file: skip it, others suffice
            continue
        band = _render_band(font)
        if band is not None:
            names.append(name)
            glyphs.append(tuple(band))
    return GlyphAtlas(tuple(names), tuple(glyphs))
