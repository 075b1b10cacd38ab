"""The block page: what was blocked, why (category and AUP clause), a reference, how to ask for review.

Everything shown is escaped: hosts, paths and categories can be attacker-controlled.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from urllib.parse import quote

from mitmproxy import http

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - {school}</title>
<style>
 body{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f6f8;
      color:#1d2733;margin:0}}
 main{{max-width:40rem;margin:4rem auto;background:#fff;border-radius:12px;padding:2rem 2.5rem;
      box-shadow:0 2px 12px rgba(0,0,0,.08);border-top:6px solid {colour}}}
 h1{{font-size:1.5rem;margin:0 0 1rem}} dl{{display:grid;grid-template-columns:9rem 1fr;gap:.4rem 1rem}}
 dt{{color:#5b6b7c}} dd{{margin:0;word-break:break-all}}
 .clause{{background:#f0f3f7;padding:.8rem 1rem;border-radius:8px}}
 a.button{{display:inline-block;margin-top:1rem;padding:.6rem 1rem;background:#1f5fbf;color:#fff;border-radius:6px;
          text-decoration:none}}
</style></head>
<body><main>
<h1>{title}</h1>
<p>{lead}</p>
<dl>
 <dt>Address</dt><dd>{url}</dd>
 <dt>Category</dt><dd>{category}</dd>
 <dt>Time</dt><dd>{when}</dd>
 <dt>Reference</dt><dd><strong id="ref">{ref}</strong></dd>
</dl>
<p class="clause"><strong>{school}'s Acceptable Use Policy:</strong> {clause}</p>
<p>If you think this is a mistake, or you need this page for your work, ask for a review and quote the reference.
If something online has worried or upset you, talk to a member of staff or the Designated Safeguarding Lead.</p>
{actions}
</main></body></html>
"""


def render(*, school: str, url: str, category: str, clause: str, ref: str, review_url: str,
           title: str = "This page is blocked", lead: str = "The school's web filter has blocked this page.",
           continue_url: str | None = None) -> str:
    actions = (f'<a class="button" href="{escape(review_url, quote=True)}?ref={quote(ref)}'
               f'&amp;url={quote(url[:1000], safe="")}">Ask for a review</a>')
    if continue_url:
        actions += f' <a class="button" href="{escape(continue_url, quote=True)}">Continue (this visit is logged)</a>'
    return _PAGE.format(
        title=escape(title), lead=escape(lead), school=escape(school), url=escape(url[:2000]),
        category=escape(category), clause=escape(clause or "Filtering applies to all internet use."),
        when=escape(datetime.now().astimezone().strftime("%d %b %Y %H:%M:%S %Z")), ref=escape(ref),
        actions=actions, colour="#c0392b" if continue_url is None else "#e67e22",
    )


def response(html: str, status: int = 403) -> http.Response:
    return http.Response.make(status, html.encode(), {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        "X-Esafety-Decision": "block",
    })
