"""Rendered scenarios as camera videos: what the embedded RTSP server serves (`rollcall up`, the demo,
scenario runs and benches). Apart from the runner so that starting the stack does not load the processor.
"""

from __future__ import annotations

from pathlib import Path

from infra.foundation.config import Config
from infra.foundation.paths import scenarios_dir
from infra.scenario.render import render
from infra.scenario.spec import load_spec


def render_cached(spec_path: Path):
    """Render a spec into var/scenarios/<name>/ (no work when the render is up to date)."""
    spec = load_spec(spec_path)
    return spec, render(spec_path, scenarios_dir() / spec.name)


def demo_mounts(config: Config, *, render_missing: bool = True) -> dict[str, Path]:
    """RTSP mounts for the scenarios the config serves: /<name>/door and /<name>/room."""
    mounts: dict[str, Path] = {}
    for entry in config.stack.scenarios:
        spec_path = config.resolve_path(entry)
        if render_missing:
            spec, _ = render_cached(spec_path)
            name = spec.name
        else:
            name = load_spec(spec_path).name
        folder = scenarios_dir() / name
        for camera in ("door", "room"):
            video = folder / f"{camera}.ts"
            if video.exists():
                mounts[f"/{name}/{camera}"] = video
    return mounts
