"""Plain, self-contained HTML for the front page and the AsyncAPI page (no external assets).

Everything a page needs is inline or served by the same process, so the pages work on a
network with no route to the internet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any

ICON = "/static/docs/favicon.png"

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d2733; }
h1 { margin-bottom: 0.2rem; } h1 small { font-weight: normal; color: #5a6572; }
.lang { display: grid; grid-template-columns: 1fr 1fr; gap: 2rem; }
a { color: #0b5cad; } code, pre { font: 13px/1.4 ui-monospace, monospace; }
pre { background: #f4f6f8; padding: 0.6rem; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.3rem 0.6rem; border-bottom: 1px solid #dde3e8; }
footer { margin-top: 2rem; color: #5a6572; font-size: 14px; }
"""


@dataclass(frozen=True)
class Link:
    """One link of a front page, labelled in Vietnamese and English."""

    href: str
    vi: str
    en: str


@dataclass(frozen=True)
class About:
    """What a service's front page says about it, in Vietnamese and English."""

    name: str
    title_vi: str
    title_en: str
    summary_vi: str
    summary_en: str
    extra_links: tuple[Link, ...] = ()


def _page(title: str, body: str, *, lang: str = "vi") -> str:
    return (
        f'<!doctype html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        f'<link rel="icon" type="image/png" href="{ICON}">\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _link_list(links: tuple[Link, ...], language: str) -> str:
    items = []
    for link in links:
        label = link.vi if language == "vi" else link.en
        items.append(
            f'<li><a href="{escape(link.href)}">{escape(label)}</a> '
            f"<code>{escape(link.href)}</code></li>"
        )
    return "<ul>\n" + "\n".join(items) + "\n</ul>"


def front_page(about: About, links: tuple[Link, ...]) -> str:
    """The front page at / of a service: what it does and where its pages are."""
    body = (
        f"<h1>PAHT {escape(about.name)} <small>{escape(about.title_vi)} · "
        f"{escape(about.title_en)}</small></h1>\n"
        '<div class="lang">\n'
        f'<section lang="vi"><h2>Tiếng Việt</h2><p>{escape(about.summary_vi)}</p>\n'
        f"{_link_list(links, 'vi')}</section>\n"
        f'<section lang="en"><h2>English</h2><p>{escape(about.summary_en)}</p>\n'
        f"{_link_list(links, 'en')}</section>\n"
        "</div>\n"
        "<footer>Các trang này không tải gì từ Internet · "
        "These pages load nothing from the internet.</footer>"
    )
    return _page(f"PAHT {about.name}", body)


def _ref_name(ref: dict[str, Any]) -> str:
    return str(ref.get("$ref", "")).rsplit("/", 1)[-1]


def _operations_by_channel(document: dict[str, Any]) -> dict[str, list[str]]:
    """'intake sends', 'routing receives', … per channel key."""
    found: dict[str, list[str]] = {}
    for key, operation in sorted(document.get("operations", {}).items()):
        service = key.split("_", 1)[0]
        verb = "sends" if operation.get("action") == "send" else "receives"
        found.setdefault(_ref_name(operation.get("channel", {})), []).append(f"{service} {verb}")
    return found


def asyncapi_page(document: dict[str, Any], *, json_href: str) -> str:
    """The AsyncAPI document as a page: channels, their messages and the payload schemas."""
    info = document.get("info", {})
    components = document.get("components", {})
    messages: dict[str, Any] = components.get("messages", {})
    operations = _operations_by_channel(document)
    rows = []
    for key, channel in sorted(document.get("channels", {}).items()):
        names = [_ref_name(ref) for ref in channel.get("messages", {}).values()]
        message_links = ", ".join(
            f'<a href="#message-{escape(n)}">{escape(messages.get(n, {}).get("name", n))}</a>'
            for n in sorted(names)
        )
        partitions = channel.get("bindings", {}).get("kafka", {}).get("partitions", "")
        rows.append(
            f"<tr><td><code>{escape(channel.get('address', key))}</code></td>"
            f"<td>{escape(str(partitions))}</td>"
            f"<td>{escape(', '.join(operations.get(key, [])))}</td>"
            f"<td>{message_links or '—'}</td></tr>"
        )
    sections = []
    for key, message in sorted(messages.items()):
        payload = _ref_name(message.get("payload", {}))
        sections.append(
            f'<section id="message-{escape(key)}"><h3><code>{escape(message.get("name", key))}'
            f"</code> {escape(message.get('title', ''))}</h3>\n"
            f"<p>{escape(message.get('summary', ''))}</p>\n"
            f'<p>Payload: <a href="#schema-{escape(payload)}">{escape(payload)}</a></p>'
            "</section>"
        )
    schemas = [
        f'<details id="schema-{escape(name)}"><summary><code>{escape(name)}</code></summary>'
        f"<pre>{escape(json.dumps(schema, indent=2, ensure_ascii=False))}</pre></details>"
        for name, schema in sorted(components.get("schemas", {}).items())
    ]
    version = f"AsyncAPI {document.get('asyncapi', '')} · v{info.get('version', '')}"
    body = (
        f"<h1>{escape(info.get('title', 'AsyncAPI'))} <small>{escape(version)}</small></h1>\n"
        f"<p>{escape(info.get('description', ''))}</p>\n"
        f'<p><a href="{escape(json_href)}">AsyncAPI JSON</a> · <a href="/">PAHT</a></p>\n'
        "<h2>Channels (Kafka topics)</h2>\n<table><thead><tr><th>Topic</th><th>Partitions</th>"
        "<th>Operations</th><th>Messages</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n<h2>Messages</h2>\n"
        + "\n".join(sections)
        + "\n<h2>Schemas</h2>\n"
        + "\n".join(schemas)
    )
    return _page(f"{info.get('title', 'AsyncAPI')} (AsyncAPI)", body, lang="en")
