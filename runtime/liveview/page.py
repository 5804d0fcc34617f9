"""The live view's page: an image per stream, its figures (refreshed from `/stats` every second), the legend."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from urllib.parse import quote


def render_page(names: Sequence[str], classes: Sequence[str], palette: Sequence[tuple[int, ...]], token: bytes) -> str:
    """The HTML page; with a `token` (UTF-8 bytes), its image and stats URLs carry it."""
    query = f"?token={quote(token, safe='')}" if token else ""
    tiles = "".join(
        f'<figure><img id="s{i}" src="{html.escape(f"/stream/{i}.mjpg{query}")}" alt="{html.escape(name)}">'
        f'<figcaption>{html.escape(name)}</figcaption><pre id="t{i}"></pre></figure>'
        for i, name in enumerate(names)
    )
    legend = "".join(
        f'<li><span style="background:rgb({r},{g},{b})"></span>{html.escape(name)}</li>'
        for name, (r, g, b) in zip(classes, palette, strict=False)
    )
    stats_url = json.dumps(f"/stats{query}").replace("<", "\\u003c")  # inside <script>
    return _PAGE.format(tiles=tiles, legend=legend, stats=stats_url)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cfnet live</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1em;background:#111;color:#eee}}
main{{display:flex;flex-wrap:wrap;gap:1em}} figure{{margin:0}} img{{max-width:640px;display:block;background:#222}}
pre{{font-size:12px;margin:.3em 0}} ul{{list-style:none;padding:0;columns:4}}
li span{{display:inline-block;width:1em;height:1em;margin-right:.4em;vertical-align:middle}}
</style></head>
<body><h1>cfnet live</h1><main>{tiles}</main><pre id="agg"></pre><h2>Classes</h2><ul>{legend}</ul>
<script>
const url = {stats};
function fmt(s) {{
  const lat = Object.entries(s.latency_ms || {{}})
    .map(([k, v]) => `${{k.padEnd(12)}} p50 ${{v.median.toFixed(1)}}  p90 ${{v.p90.toFixed(1)}} ms`).join("\\n");
  const rest = Object.entries(s).filter(([k, v]) => typeof v !== "object" || v === null)
    .map(([k, v]) => `${{k}}: ${{typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v}}`).join("\\n");
  const queued = s.queued ? `\\nqueued: batcher ${{s.queued.batcher}}, writer ${{s.queued.writer}}` : "";
  return rest + queued + "\\n" + lat;
}}
async function refresh() {{
  try {{
    const stats = await (await fetch(url, {{cache: "no-store"}})).json();
    const a = stats.aggregate || {{}};
    const sizes = Object.entries(a.batch_sizes || {{}}).map(([k, v]) => `${{v}} x ${{k}}`).join(", ");
    document.getElementById("agg").textContent =
      `all streams: ${{a.frames}} frames, ${{(a.fps || 0).toFixed(1)}} frames/s; batches: ${{sizes || "none"}}`;
    (stats.streams || []).forEach((s, i) => {{
      const el = document.getElementById("t" + i); if (el) el.textContent = fmt(s);
    }});
  }} catch (e) {{}}
}}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
