"""The live view's page: an image per stream, its state and figures (refreshed from `/stats` every second), the
legend. A page that finds more streams in `/stats` than it shows reloads itself (streams only join the list)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from urllib.parse import quote


def render_page(
    streams: Sequence[tuple[str, str]], classes: Sequence[str], palette: Sequence[tuple[int, ...]], token: bytes
) -> str:
    """The HTML page of `streams` (name, state); with a `token` (UTF-8 bytes), its image and stats URLs carry it."""
    query = f"?token={quote(token, safe='')}" if token else ""
    tiles = "".join(
        f'<figure id="f{i}" class="{html.escape(state)}">'
        f'<img id="s{i}" src="{html.escape(f"/stream/{i}.mjpg{query}")}" alt="{html.escape(name)}">'
        f'<figcaption>{html.escape(name)} <span id="st{i}">{html.escape(state)}</span></figcaption>'
        f'<pre id="t{i}"></pre></figure>'
        for i, (name, state) in enumerate(streams)
    )
    legend = "".join(
        f'<li><span style="background:rgb({r},{g},{b})"></span>{html.escape(name)}</li>'
        for name, (r, g, b) in zip(classes, palette, strict=False)
    )
    stats_url = json.dumps(f"/stats{query}").replace("<", "\\u003c")  # inside <script>
    return _PAGE.format(tiles=tiles, count=len(streams), legend=legend, stats=stats_url)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cfnet live</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1em;background:#111;color:#eee}}
main{{display:flex;flex-wrap:wrap;gap:1em}} figure{{margin:0}} img{{max-width:640px;display:block;background:#222}}
pre{{font-size:12px;margin:.3em 0}} ul{{list-style:none;padding:0;columns:4}}
li span{{display:inline-block;width:1em;height:1em;margin-right:.4em;vertical-align:middle}}
.running span{{color:#6c6}} .reconnecting span{{color:#fb3}} .ended span{{color:#888}} .ended img{{opacity:.4}}
</style></head>
<body><h1>cfnet live</h1><main>{tiles}</main><pre id="agg"></pre><h2>Classes</h2><ul>{legend}</ul>
<script>
const url = {stats};
const tiles = {count};
function fmt(s) {{
  const lat = Object.entries(s.latency_ms || {{}})
    .map(([k, v]) => `${{k.padEnd(12)}} p50 ${{v.median.toFixed(1)}}  p90 ${{v.p90.toFixed(1)}} ms`).join("\\n");
  const rest = Object.entries(s).filter(([k, v]) => (typeof v !== "object" || v === null) && k !== "drift")
    .map(([k, v]) => `${{k}}: ${{typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v}}`).join("\\n");
  const queued = s.queued ? `\\nqueued: batcher ${{s.queued.batcher}}, writer ${{s.queued.writer}}` : "";
  const shares = Object.entries(s.shares || {{}}).filter(([k, v]) => v > 0).sort((a, b) => b[1] - a[1])
    .slice(0, 5).map(([k, v]) => `${{k}} ${{(100 * v).toFixed(0)}}%`).join(", ");
  const drift = s.drift ? `\\ndrift: ${{s.drift.score.toFixed(2)}}${{s.drift.alerting ? " ALERT" : ""}}` : "";
  return rest + queued + (shares ? `\\nclasses: ${{shares}}` : "") + drift + "\\n" + lat;
}}
async function refresh() {{
  try {{
    const stats = await (await fetch(url, {{cache: "no-store"}})).json();
    if ((stats.streams || []).length > tiles) {{ location.reload(); return; }}
    const a = stats.aggregate || {{}};
    const sizes = Object.entries(a.batch_sizes || {{}}).map(([k, v]) => `${{v}} x ${{k}}`).join(", ");
    document.getElementById("agg").textContent =
      `all streams: ${{a.frames}} frames, ${{(a.fps || 0).toFixed(1)}} frames/s; batches: ${{sizes || "none"}}`;
    (stats.streams || []).forEach((s, i) => {{
      const el = document.getElementById("t" + i); if (el) el.textContent = fmt(s);
      const fig = document.getElementById("f" + i), st = document.getElementById("st" + i);
      if (fig && s.state) {{ fig.className = s.state; st.textContent = s.state; }}
    }});
  }} catch (e) {{}}
}}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
