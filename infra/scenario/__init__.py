"""Scenario rendering: a TOML spec -> door and room camera videos + ground truth (see render.py)."""

from infra.scenario.render import RENDERER_VERSION, RenderResult, default_out_dir, render
from infra.scenario.spec import ScenarioSpec, load_spec

__all__ = ["RENDERER_VERSION", "RenderResult", "ScenarioSpec", "default_out_dir", "load_spec", "render"]
