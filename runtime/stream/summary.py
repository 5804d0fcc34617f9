"""The text summary `cfnet stream` prints at the end of a run."""

from __future__ import annotations

from runtime.stream.stats import STAGES, RunStats, StreamStats


def summary_text(result: RunStats) -> str:
    """The text summary: a line per stream, the aggregate, latency p50/p90 per stage and stream."""
    lines: list[str] = []
    echo = lines.append
    for stats in result.streams:
        echo(
            f"{stats.frames} frames ({stats.dropped} dropped, {stats.resized} resized) from {stats.source} in "
            f"{stats.seconds:.2f} s: {stats.fps:.1f} fps end-to-end (source {stats.input_fps:.1f} fps, "
            f"{stats.backend}); ended: {stats.ended_by}"
            + (f" ({stats.error})" if stats.error else "")
            + camera_summary(stats)
        )
        if stats.output:
            echo(f"wrote {stats.output}")
    if len(result.streams) > 1:
        sizes = ", ".join(f"{n}x{size}" for size, n in sorted(result.batch_sizes.items()))
        echo(
            f"all {len(result.streams)} streams: {result.frames} frames in {result.seconds:.2f} s, "
            f"{result.fps:.1f} frames/s; batch {result.batch} (timeout {result.batch_timeout_ms:g} ms), "
            f"{result.workers} inference worker{'s' if result.workers > 1 else ''}, batches: {sizes or 'none'}"
        )
    if len(result.streams) > 1:  # which stream each pair of columns belongs to
        echo(" " * 12 + "".join(f"{s.name[:17]:>18}" for s in result.streams))
    header = "".join(f"{'p50':>9}{'p90':>9}" for _ in result.streams)
    echo(f"{'latency ms':<12}{header}")
    for stage in STAGES:
        cells = [s.latency_ms.get(stage) for s in result.streams]
        if any(cells):
            row = "".join(f"{c['median']:>9.2f}{c['p90']:>9.2f}" if c else f"{'-':>9}{'-':>9}" for c in cells)
            echo(f"{stage:<12}{row}")
    return "\n".join(lines)


def camera_summary(stats: StreamStats) -> str:
    """What the summary line of a stream adds about reconnects and recordings (nothing when none happened)."""
    parts = []
    if stats.reconnects:
        parts.append(f"{stats.reconnects} reconnects, {stats.down_seconds:.1f} s down")
    if stats.segments:
        parts.append(f"{stats.recorded} frames recorded in {stats.segments} segments")
    if stats.write_errors:
        parts.append("write errors: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.write_errors.items())))
    return "; " + "; ".join(parts) if parts else ""
