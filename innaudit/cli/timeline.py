"""``innaudit render LOG.jsonl``: a monitor log drawn as a timeline (HTML) or summed up (console)."""

from __future__ import annotations

from pathlib import Path

from innaudit.core.errors import UsageError

__all__ = ["TIMELINE_FORMATS", "render_timeline"]

TIMELINE_FORMATS = ("console", "html")


def render_timeline(log_path: str, outputs: tuple[str, ...]) -> None:
    """Read the log, then write each ``FORMAT[=PATH]`` (console by default; ``html=-`` is stdout).

    Targets are checked as ``run -o`` checks them (the log itself is refused as a target); every
    string of the log is sanitized before the console.
    """
    from innaudit.cli.output import check_targets, echo, write_files
    from innaudit.core.errors import clean_tree
    from innaudit.monitor.log import read_log
    from innaudit.render import timeline

    targets: list[tuple[str, Path | None]] = []
    for value in outputs or ("console",):
        fmt, sep, path = value.partition("=")
        if fmt not in TIMELINE_FORMATS or (sep and not path):
            raise UsageError(
                f"-o {value!r}: a monitor log renders as console or html[=PATH]; "
                f"expected one of {', '.join(TIMELINE_FORMATS)}, as FORMAT or FORMAT=PATH"
            )
        targets.append((fmt, Path(path) if sep and path != "-" else None))  # html=- is stdout
    check_targets(targets, [Path(log_path)])
    records = read_log(log_path)
    pages = [
        (target, timeline.render(records) if fmt == "html" else timeline.text(clean_tree(records)))
        for fmt, target in targets
    ]
    write_files([("the timeline", target, page) for target, page in pages if target is not None])
    for target, page in pages:
        if target is None:
            echo(page)
