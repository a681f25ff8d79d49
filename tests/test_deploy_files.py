"""The deployment files (infra/deploy/) agree with the code: every `rollcall ...` command line in the systemd
units, the Containerfile, compose.yaml and the deployment README names a command that exists, with options
that command has and values it accepts (parsed by the command itself, in-process, as tests/test_cli_commands.py
walks the tree); the topics compose creates are TopicsConfig's; the environment overrides validate against the
configuration model. Pure and fast: files are read and parsed, nothing is started, no network."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml  # PyYAML is pinned in requirements.lock

from infra.cli.main import cli
from infra.foundation.config import TopicsConfig, config_from_dict

DEPLOY = Path(__file__).resolve().parents[1] / "infra" / "deploy"
ROOT = DEPLOY.parents[1]
UNITS = ("rollcall-processor@.service", "rollcall-writer@.service", "rollcall-dashboard.service")


# --- reading the files ------------------------------------------------------------------------------


def unit_entries(name: str) -> list[tuple[str, str]]:
    """(key, value) of every setting of a unit file, in order (keys repeat: Environment=, EnvironmentFile=)."""
    entries = []
    for line in (DEPLOY / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            entries.append((key.strip(), value.strip()))
    return entries


def unit_defaults(name: str) -> dict[str, str]:
    """The unit's Environment= assignments (what ${VAR} in ExecStart is when no env file overrides it)."""
    env = {}
    for key, value in unit_entries(name):
        if key == "Environment":
            env.update(item.split("=", 1) for item in shlex.split(value))
    return env


def env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in env, f"${name} has no default in the unit"
        return env[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def rollcall_args(tokens: list[str]) -> list[str] | None:
    """The arguments after the `rollcall` program in one shell command, or None when it runs something else."""
    while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if tokens and (tokens[0] == "rollcall" or tokens[0].endswith("/rollcall")):
        return tokens[1:]
    return None


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line: split on && || ; (no quoting of those inside arguments here)."""
    return [shlex.split(part) for part in re.split(r"&&|\|\||;", script) if part.strip()]


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every `rollcall` invocation in the deployment files."""
    found = []
    for name in UNITS:
        for key, value in unit_entries(name):
            if key.startswith("Exec") and rollcall_args(shlex.split(value)) is not None:
                found.append((f"{name} {key}", rollcall_args(shlex.split(expand(value, unit_defaults(name))))))
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "RUN":
            found += [("Containerfile RUN", a) for c in shell_commands(rest) if (a := rollcall_args(c)) is not None]
    entrypoint = re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1)
    cmd = re.search(r"^CMD (.*)$", text, re.M).group(1)
    found.append(("Containerfile ENTRYPOINT+CMD", rollcall_args(yaml.safe_load(entrypoint) + yaml.safe_load(cmd))))
    for service, spec in compose()["services"].items():
        if not spec.get("image", "").startswith("rollcall:"):
            continue
        if "entrypoint" in spec:  # a shell script of rollcall commands
            for command in shell_commands(spec["command"][-1]):
                found.append((f"compose {service}", rollcall_args(command)))
        elif "command" in spec:
            found.append((f"compose {service}", spec["command"]))
    in_block = False
    for line in (DEPLOY / "README.md").read_text().replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block:
            found += [("README.md", a) for c in shell_commands(line.split(" #")[0]) if (a := rollcall_args(c)) is not None]
    return found


COMMAND_LINES = command_lines()


def parse(args: list[str]) -> tuple[str, click.Context]:
    """Walk `rollcall ARGS` down the command tree and let the command it reaches parse the rest: an unknown
    command or option, a missing argument or a value it refuses raises. Returns the command path and the
    context the command parsed (its params)."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="rollcall", **cli.context_settings)
    args = list(args)
    while isinstance(command, click.Group):
        while args and args[0].startswith("-"):  # the group's own options, e.g. rollcall --config FILE run
            token = args.pop(0)
            option = token.split("=", 1)[0]
            param = next((p for p in command.get_params(ctx) if option in p.opts + p.secondary_opts), None)
            assert param is not None, f"{ctx.command_path} has no option {option}"
            if option in ("-h", "--help"):
                return ctx.command_path, ctx
            if not getattr(param, "is_flag", False) and "=" not in token:
                assert args, f"{ctx.command_path} {option} needs a value"
                args.pop(0)
        assert args, f"`{ctx.command_path}` is a group, not a command"
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`{ctx.command_path} {name}`: no such command"
        ctx, command = click.Context(sub, info_name=name, parent=ctx), sub
    leaf = command.make_context(ctx.info_name, args, parent=ctx.parent)
    return leaf.command_path, leaf


# --- the tests --------------------------------------------------------------------------------------


def test_the_deployment_files_run_the_four_roles():
    paths = {" ".join(a[:2]) if a[:1] in (["attendance"], ["dashboard"], ["db"], ["models"]) else a[0]
             for _, a in COMMAND_LINES if a}
    assert {"run", "attendance writer", "dashboard serve", "db migrate", "db load-config", "models fetch"} <= paths


@pytest.mark.parametrize(("where", "args"), COMMAND_LINES, ids=[f"{w}: {' '.join(a)}" for w, a in COMMAND_LINES])
def test_every_rollcall_command_line_exists_with_its_options(where, args):
    # `run --group` comes with the processor group change; until it is merged the `run` lines fail here.
    try:
        parse(args)
    except click.UsageError as exc:
        pytest.fail(f"{where}: rollcall {' '.join(args)}: {exc.format_message()}", pytrace=False)


def test_the_processors_join_one_group_and_the_dashboard_listens_on_its_port():
    lines = {(w, " ".join(a)) for w, a in COMMAND_LINES}
    assert ("compose processor", "run --group campus --metrics-port 9108") in lines
    assert ("rollcall-processor@.service ExecStart", "run --group campus --metrics-port 9108") in lines
    services = compose()["services"]
    assert "8080:8080" in services["dashboard"]["ports"]
    assert services["dashboard"]["command"][-1] == "8080"


@pytest.mark.parametrize("name", UNITS)
def test_units_run_as_a_dedicated_user_restart_stop_cleanly_and_are_confined(name):
    entries = unit_entries(name)
    settings = dict(entries)
    for key, value in {"User": "rollcall", "Restart": "on-failure", "KillSignal": "SIGTERM",
                       "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "WorkingDirectory": "/opt/rollcall", "StateDirectory": "rollcall"}.items():
        assert settings.get(key) == value, f"{name}: {key}={settings.get(key)}, expected {value}"
    assert int(settings["TimeoutStopSec"]) >= 10
    home = unit_defaults(name)["ROLLCALL_HOME"]
    assert home == "/var/lib/rollcall" and settings["ReadWritePaths"] == home  # the one writable path
    assert ("EnvironmentFile", "/etc/rollcall/rollcall.env") in entries
    assert settings["ExecStart"].startswith("/opt/rollcall/.venv/bin/rollcall ")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_units_pass_systemd_analyze_verify(tmp_path):
    # templates are verified as an instance; ExecStart must name an existing executable, so this Python
    names = []
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/opt/rollcall/.venv/bin/rollcall", sys.executable)
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name.replace("@.", "@1.")))
        if "@." in name:
            (tmp_path / name.replace("@.", "@1.")).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True,
                            timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "rollcall-" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_the_shared_environment_file_is_a_valid_overlay_of_the_configuration():
    env = env_file(DEPLOY / "rollcall.env.example")
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "ROLLCALL_CONFIG", "ROLLCALL_PSEUDONYM_KEY"} <= set(env)
    config = config_from_dict({}, environ=env)  # unknown ROLLCALL__ keys or bad values raise RollcallError
    assert config.database.url == env["DATABASE_URL"]
    assert config.kafka.bootstrap_servers == env["KAFKA_BOOTSTRAP_SERVERS"]
    assert len(env["ROLLCALL_PSEUDONYM_KEY"]) >= 32


def test_compose_wires_the_services_with_healthchecks_and_one_shots():
    document = compose()
    services = document["services"]
    assert {"kafka", "postgres", "topics", "init", "processor", "writer", "dashboard"} <= set(services)
    assert services["processor"]["deploy"]["replicas"] == 3
    assert services["writer"]["deploy"]["replicas"] == 2
    assert services["kafka"]["image"].startswith("apache/kafka:3.9.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["postgres"]["image"].startswith("postgres:16")
    for name, spec in services.items():
        for needed, how in spec.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on a missing service {needed}"
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[needed], f"{name} waits for {needed}'s health, which has no check"
            elif condition == "service_completed_successfully":
                assert services[needed].get("restart") == "no", f"{needed} is a one-shot: restart must be 'no'"
            else:
                pytest.fail(f"{name} -> {needed}: condition {condition}")
    for name in ("processor", "writer", "dashboard"):
        assert "healthcheck" in services[name] and "init" in services[name]["depends_on"]
    build = services["processor"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Containerfile"
    for volume in services["init"]["volumes"]:
        assert volume.split(":")[0] == "./rollcall.toml"


def test_compose_creates_the_topics_of_the_configuration_model():
    topics = compose()["services"]["topics"]["environment"]["TOPICS"].split()
    assert topics == [f"{t.name}:{t.partitions}" + (":compact" if t.compacted else "") for t in TopicsConfig().all()]


def test_compose_environment_is_a_valid_overlay_of_the_configuration():
    env = {k: re.sub(r"\$\{[^}]*\}", "x", str(v))
           for k, v in compose()["services"]["dashboard"]["environment"].items()}
    config = config_from_dict({}, environ=env)
    assert config.kafka.bootstrap_servers == "kafka:9092" and config.database.url.endswith("@postgres:5432/rollcall")


def test_containerfile_pins_the_base_installs_the_lock_and_runs_unprivileged():
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    instructions = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert instructions[0] == ["FROM", "python:3.11-slim-bookworm"]
    assert "pip install --no-deps -r requirements.lock" in text
    assert "pip install --no-deps --no-build-isolation -e ." in text
    users = [rest.strip() for op, rest in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [op for op, _ in instructions].index("USER") < [op for op, _ in instructions].index("ENTRYPOINT")
    assert dict(instructions)["ENTRYPOINT"].strip() == '["rollcall"]'
    ignored = (DEPLOY / "Containerfile.dockerignore").read_text().split()
    for op, rest in instructions:
        if op == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert f"!{source}" in ignored, f"COPY {source}: excluded from the build context"
