"""mkdocs hook: the pages' TeX becomes MathML when the site is built.

pymdownx.arithmatex (generic mode) wraps ``$...$`` and ``$$...$$`` in
``<span|div class="arithmatex">\\(...\\)</span|div>``; this hook converts each
to MathML with latex2mathml, which every current browser renders natively. The
site needs no MathJax, no CDN and no JavaScript for its formulas: it reads the
same offline, over ``file://``, as online.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
DISPLAY = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def on_page_content(content: str, **kwargs: Any) -> str:
    content = DISPLAY.sub(lambda m: convert(html.unescape(m[1]).strip(), display="block"), content)
    return INLINE.sub(lambda m: convert(html.unescape(m[1]).strip()), content)
