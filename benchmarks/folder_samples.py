"""``--ood folder:DIR --samples 100`` on a folder of 100,000 small images reads only what it uses.

Goal: resolving the set costs what its 100 images cost, not what the folder holds: the bytes
read (``rchar`` of ``/proc/self/io``: every ``read`` the process makes) stay within 100 images'
bytes plus the directory listing, far below the folder's size, and the peak memory (RSS) grows
by far less than the folder's size. The folder (``--images`` PNG files of 32x32 RGB noise in
``--classes`` class folders, made once and reused) is listed in full (names only: the order must
be sorted to be reproducible) and only the first ``--samples`` files are opened and decoded.

Each measurement runs in a fresh interpreter (``--measure``), so its peak RSS and its bytes read
are its own; ``--samples`` 100 and 1000 are compared, and the ratio of their times says how much
of the cost is the listing (paid once) and how much is per image.

Usage: ``python benchmarks/folder_samples.py [--folder /tmp/innaudit-100k] [--images 100000]
[--classes 10]``. Prints the figures and "met"/"not met"; exits 0 either way.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

if importlib.util.find_spec("innaudit") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent


def make_folder(folder: Path, images: int, classes: int) -> int:
    """Write ``images`` 32x32 RGB noise PNGs (once); returns the folder's size in bytes."""
    import numpy as np
    from PIL import Image

    done = folder / ".complete"
    if not done.exists():
        rng = np.random.default_rng(0)
        for i in range(images):
            sub = folder / f"class_{i % classes:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(sub / f"{i:06d}.png")
        done.write_text(str(images))
    return sum(p.stat().st_size for p in folder.rglob("*.png"))


def _read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def measure(folder: Path, samples: int) -> dict[str, float]:
    """One resolve of ``folder:DIR`` in this process: seconds, bytes read, peak RSS growth."""
    import torch  # noqa: F401  (the imports come before the baseline: innaudit run has them anyway)
    from PIL import Image, PngImagePlugin  # noqa: F401

    from innaudit.core.domain import DataDomain
    from innaudit.data import Role, resolve_dataset
    from innaudit.data import images as _images  # noqa: F401

    domain = DataDomain(shape=(3, 32, 32), low=0.0, high=1.0, levels=256)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    read0, start = _read_bytes(), time.perf_counter()
    ds = resolve_dataset(f"folder:{folder}", Role.OOD, domain, samples, 0)
    batch = ds.first(ds.size)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "read_bytes": _read_bytes() - read0,
        "rss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0,
        "size": ds.size,
        "files_read": ds.origin["files_read"],
        "shape": list(batch.shape),
    }


def _child(folder: Path, samples: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(samples), "--folder", str(folder)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/innaudit-100k"))
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--measure", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.folder, args.measure)))
        return 0
    start = time.perf_counter()
    total = make_folder(args.folder, args.images, args.classes)
    print(
        f"folder: {args.images} PNG files, {total / 2**20:.1f} MiB ({time.perf_counter() - start:.0f} s to make or check)"
    )
    small, large = _child(args.folder, 100), _child(args.folder, 1000)
    for name, m in (("--samples 100", small), ("--samples 1000", large)):
        print(
            f"{name}: {m['seconds']:.2f} s, {m['files_read']} files decoded, read {m['read_bytes'] / 2**20:.2f} MiB "
            f"({m['read_bytes'] / total:.2%} of the folder), peak RSS +{m['rss_growth_kib'] / 1024:.1f} MiB"
        )
    per_image = total / args.images
    met = small["read_bytes"] < 0.01 * total and small["rss_growth_kib"] * 1024 < 0.1 * total
    print(f"bytes read at 100 samples / the 100 images' bytes: {small['read_bytes'] / (100 * per_image):.1f}")
    print(f"time at 1000 samples / time at 100 samples: {large['seconds'] / small['seconds']:.2f}")
    print("goal (reads under 1 % of the folder, memory under 10 % of it):", "met" if met else "not met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
