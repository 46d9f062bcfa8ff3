"""One self-contained HTML page: sections of figures (PNG embedded as base64), tables and notes.

The page loads nothing from anywhere (no scripts, fonts or stylesheets from the network), so it can
be mailed, archived or opened offline, and a headless browser can check it (see ``browser.py``).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from phasescope.run.atomic import atomic_write_text

FIGURE_DPI = 110  # sharp on screen, and keeps a page with 20 figures under a few MB


@dataclass
class FigureBlock:
    """A figure: its title (the image's alt text too), a caption, and the PNG bytes."""

    title: str
    png: bytes
    caption: str = ""


@dataclass
class TableBlock:
    title: str
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class NoteBlock:
    """A short paragraph, e.g. why a figure is missing."""

    text: str


Block = FigureBlock | TableBlock | NoteBlock


@dataclass
class Section:
    """A titled part of the page: findings (one line each) first, then blocks in order."""

    title: str
    intro: str = ""
    findings: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")

    def figure(self, title: str, figure, caption: str = "") -> None:
        """Append a matplotlib figure (rendered to PNG and closed)."""
        self.blocks.append(FigureBlock(title, figure_png(figure), caption))

    def note(self, text: str) -> None:
        self.blocks.append(NoteBlock(text))

    def table(self, title: str, frame: pd.DataFrame, caption: str = "") -> None:
        self.blocks.append(TableBlock(title, frame, caption))


def figure_png(figure, dpi: int = FIGURE_DPI) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.5em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
margin-top: 2em; } h3 { font-size: 1.05em; margin-bottom: 0.3em; }
.subtitle { color: #666; margin-top: 0; } nav a { margin-right: 1.2em; }
.findings { background: #f4f8fb; border-left: 4px solid #3b7dd8; padding: 0.6em 1em; }
.findings li { margin: 0.2em 0; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92em; margin-top: 0.3em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; } th { background: #f6f6f6; }
.note { color: #8a5a00; background: #fff8e6; padding: 0.4em 0.8em; border-radius: 3px; }
"""


def render_page(title: str, sections: list[Section], subtitle: str = "", headline: list[str] | None = None) -> str:
    """The page as one HTML string."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_text(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{_text(title)}</h1>",
             f'<p class="subtitle">{_text(subtitle)}{" · " if subtitle else ""}generated {stamp}</p>']
    if len(sections) > 1:
        parts.append("<nav>" + "".join(f'<a href="#{s.anchor}">{_text(s.title)}</a>' for s in sections) + "</nav>")
    if headline:
        parts.append('<h2 id="headline">Headline findings</h2>' + _list(headline))
    for section in sections:
        parts.append(f'<h2 id="{section.anchor}">{_text(section.title)}</h2>')
        if section.intro:
            parts.append(f"<p>{_text(section.intro)}</p>")
        if section.findings:
            parts.append(_list(section.findings))
        parts += [_block(block) for block in section.blocks]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_page(path: Path | str, page: str) -> Path:
    """Write the page atomically (a reader never sees half a page)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path


def _text(value: str) -> str:
    return html.escape(str(value), quote=True)


def _list(items: list[str]) -> str:
    return '<ul class="findings">' + "".join(f"<li>{_text(item)}</li>" for item in items) + "</ul>"


def _block(block: Block) -> str:
    if isinstance(block, FigureBlock):
        data = base64.b64encode(block.png).decode("ascii")
        caption = f"<figcaption>{_text(block.caption)}</figcaption>" if block.caption else ""
        return (f"<figure><h3>{_text(block.title)}</h3>"
                f'<img alt="{_text(block.title)}" src="data:image/png;base64,{data}">{caption}</figure>')
    if isinstance(block, TableBlock):
        table = block.frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="–",
                                    escape=True)
        caption = f"<p>{_text(block.caption)}</p>" if block.caption else ""
        return f"<h3>{_text(block.title)}</h3>{table}{caption}"
    return f'<p class="note">{_text(block.text)}</p>'
