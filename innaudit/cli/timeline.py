"""``innaudit render LOG.jsonl``: a monitor log drawn as a timeline (HTML) or summed up (console)."""

from __future__ import annotations

from pathlib import Path

import click

from innaudit.core.errors import UsageError

__all__ = ["TIMELINE_FORMATS", "render_timeline"]

TIMELINE_FORMATS = ("console", "html")


def render_timeline(log_path: str, outputs: tuple[str, ...]) -> None:
    """Read the log, then write each ``FORMAT[=PATH]`` (console by default)."""
    from innaudit.monitor.log import read_log
    from innaudit.render import timeline
    from innaudit.safeio.atomic import write_atomic

    targets: list[tuple[str, Path | None]] = []
    for value in outputs or ("console",):
        fmt, sep, path = value.partition("=")
        if fmt not in TIMELINE_FORMATS or (sep and not path):
            raise UsageError(
                f"-o {value!r}: a monitor log renders as console or html=PATH; "
                f"expected one of {', '.join(TIMELINE_FORMATS)}, as FORMAT or FORMAT=PATH"
            )
        target = Path(path) if sep else None
        if target is not None and not (target.parent if str(target.parent) else Path(".")).is_dir():
            raise UsageError(f"-o {value!r}: folder {str(target.parent)!r} does not exist")
        targets.append((fmt, target))
    records = read_log(log_path)
    for fmt, target in targets:
        page = timeline.render(records) if fmt == "html" else timeline.text(records)
        if target is None:
            click.echo(page, nl=False)
            continue
        try:
            write_atomic(target, page)
        except OSError as exc:
            raise UsageError(f"cannot write the timeline to {str(target)!r}: {exc.strerror}") from None
