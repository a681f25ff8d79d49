"""The root `rollcall` group loads one area's module per command (infra/cli/main.py, AREAS)."""

from __future__ import annotations

import subprocess
import sys

from infra.cli.main import AREAS, area_commands

AREA_MODULES = sorted(set(AREAS.values()))


def test_every_command_of_every_area_is_in_the_table_and_nothing_else():
    listed = {}
    for area in AREA_MODULES:
        for name in area_commands(area):
            listed[name] = area
    assert listed == AREAS


def test_a_stack_command_does_not_load_the_processor_the_dashboard_or_the_other_areas():
    probe = ("import sys\nfrom infra.cli.main import main\n"
             "try:\n    main(['status', '--help'])\nexcept SystemExit:\n    pass\n"
             "loaded = [m for m in ('processor.pipeline', 'dashboard.app', 'consumers.writer', 'infra.cli.bench',"
             " 'infra.cli.processor') if m in sys.modules]\nprint('LOADED', loaded)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout
