"""The one page skeleton and stylesheet of melanoscan's HTML reports (audit, evaluation, triage).

Every report is a single self-contained file: no script, font or stylesheet from elsewhere.
"""

from __future__ import annotations

import html

__all__ = ["BASE_CSS", "html_page"]

BASE_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#555}
.notice{background:#fff4e5;border:1px solid #f0a030;padding:.6rem 1rem;border-radius:6px}
"""


def html_page(title: str, body: str, css: str = "") -> str:
    """A complete HTML document: ``title``, the shared stylesheet plus ``css``, ``body``."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{BASE_CSS}{css}</style></head>"
            f"<body>{body}</body></html>\n")
