"""mkdocs hooks: the pages' generated parts, filled in at build time from the repository.

``<!-- config-reference -->`` becomes the configuration reference, generated from the schema
(:func:`cbir.config.reference_markdown`); every ``<!-- results NAME TABLE ... -->`` block is
rendered again from ``resources/results/NAME`` as ``cbir readme`` renders the README's.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def on_page_markdown(markdown: str, page, config, files) -> str:
    from cbir.config import reference_markdown
    from cbir.publish import render_readme

    markdown = markdown.replace("<!-- config-reference -->", reference_markdown())
    return render_readme(markdown, REPO / "resources" / "results")
