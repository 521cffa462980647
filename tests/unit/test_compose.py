"""The docker compose file and Dockerfile agree with each other, with the settings and with the CLI."""

import argparse
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from memsvc.cli import build_parser
from memsvc.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MEMSVC_SERVICES = ("api", "worker", "worker-gpu")

# The values a user must supply (${VAR:?...}); everything else falls back to its ${VAR:-default}.
REQUIRED = {"MEMSVC_ADMIN_KEY": "test-admin-key"}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, as `docker compose config` resolves them."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if name in env:
            return env[name]
        if op == ":?":
            raise KeyError(f"{name} is required: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v), REQUIRED) for k, v in env.items()}


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines: list[str] = []
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#"):
            continue
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1] + " " + raw.strip()
        elif raw.strip():
            lines.append(raw.strip())
    out = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def dockerfile_cmd() -> list[str]:
    cmds = [args for ins, args in dockerfile_instructions() if ins == "CMD"]
    assert cmds, "Dockerfile has no CMD"
    cmd: list[str] = json.loads(cmds[-1])  # the exec form; the last CMD wins
    return cmd


def exposed_port() -> int:
    exposed = [args for ins, args in dockerfile_instructions() if ins == "EXPOSE"]
    assert len(exposed) == 1, f"Dockerfile should EXPOSE one port, has {exposed}"
    return int(exposed[0].split("/")[0])


def flag_value(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service.get("healthcheck", {}).get("test")
    assert test, "no healthcheck test"
    if isinstance(test, str):
        return test
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return " ".join(test[1:])


def test_the_services_exist() -> None:
    services = load_compose()["services"]
    assert {"postgres", "api", "worker", "worker-gpu"} <= set(services)


def test_postgres_has_pgvector_and_a_healthcheck() -> None:
    postgres = load_compose()["services"]["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:"), postgres["image"]
    assert "pg_isready" in healthcheck_command(postgres)


@pytest.mark.parametrize("name", MEMSVC_SERVICES)
def test_memsvc_services_use_the_postgres_service(name: str) -> None:
    services = load_compose()["services"]
    pg_env = environment(services["postgres"])
    url = urlsplit(environment(services[name])["MEMSVC_DATABASE_URL"])
    assert url.scheme in ("postgresql", "postgres", "postgresql+psycopg")
    assert url.hostname == "postgres"
    assert (url.port or 5432) == 5432
    assert url.username == pg_env["POSTGRES_USER"]
    assert url.password == pg_env["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == pg_env.get("POSTGRES_DB", pg_env["POSTGRES_USER"])


@pytest.mark.parametrize("name", MEMSVC_SERVICES)
def test_every_memsvc_variable_is_a_setting(name: str) -> None:
    known = settings_env_names()
    used = {k for k in environment(load_compose()["services"][name]) if k.startswith("MEMSVC_")}
    assert used, f"{name} sets no MEMSVC_* variable"
    assert used <= known, f"{name} sets variables that Settings does not read: {sorted(used - known)}"


def test_api_runs_no_workers_and_needs_an_admin_key() -> None:
    api = load_compose()["services"]["api"]
    assert environment(api)["MEMSVC_WORKERS"] == "0"
    with pytest.raises(KeyError, match="MEMSVC_ADMIN_KEY"):
        interpolate(str(api["environment"]["MEMSVC_ADMIN_KEY"]), {})


def test_workers_wait_for_a_healthy_api_and_api_for_a_healthy_postgres() -> None:
    services = load_compose()["services"]
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "worker-gpu"):
        assert services[name]["depends_on"]["api"]["condition"] == "service_healthy", name
        assert services[name]["command"][:2] == ["memsvc", "worker"], name


def test_api_healthcheck_hits_healthz_on_the_served_port() -> None:
    api = load_compose()["services"]["api"]
    port = exposed_port()
    assert re.search(rf"//(127\.0\.0\.1|localhost):{port}/healthz", healthcheck_command(api))
    assert int(flag_value(dockerfile_cmd(), "--port")) == port
    if "command" in api:  # a command in compose replaces the Dockerfile's CMD
        assert int(flag_value(list(api["command"]), "--port")) == port
    published = [str(p) for p in api["ports"]]
    assert any(p.rsplit(":", 1)[-1] == str(port) for p in published), published


def test_gpu_worker_is_in_the_gpu_profile_with_an_nvidia_device() -> None:
    gpu = load_compose()["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["EXTRAS"] == "gpu"
    assert environment(gpu)["MEMSVC_EMBED_DEVICE"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), devices
    # The CPU services must not land in a profile, or a plain `docker compose up` would skip them.
    services = load_compose()["services"]
    assert all("profiles" not in services[n] for n in ("postgres", "api", "worker"))


def test_named_volumes_are_declared() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if not source.startswith((".", "/", "~")):  # bind mounts need no declaration
                used.add(source)
    assert used, "no named volume used"
    assert used <= declared, f"used but not declared: {sorted(used - declared)}"


def test_api_data_volume_is_the_served_data_dir() -> None:
    api = load_compose()["services"]["api"]
    targets = {v.split(":")[1] for v in api["volumes"]}
    assert flag_value(dockerfile_cmd(), "--data-dir") in targets
    if "command" in api:
        assert flag_value(list(api["command"]), "--data-dir") in targets


def test_dockerfile_installs_torch_before_the_project() -> None:
    runs = [args for ins, args in dockerfile_instructions() if ins == "RUN"]
    torch = [i for i, r in enumerate(runs) if re.search(r"pip install \S*torch==\$?\{?", r)]
    project = [i for i, r in enumerate(runs) if re.search(r"pip install (-e )?\.(\s|$|\[)", r)]
    assert torch and project, runs
    assert min(torch) < min(project)
    args = {a.split("=", 1)[0]: a.split("=", 1)[-1] for ins, a in dockerfile_instructions() if ins == "ARG"}
    pin = re.search(r"torch==(\S+?)[\"' ]", runs[min(torch)] + " ")
    assert pin is not None
    version = pin.group(1)
    if version.startswith("${"):
        version = args[version[2:-1]]
    assert version == "2.13.0"
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE.read_text()


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for ins, args in dockerfile_instructions() if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_cmd_uses_real_serve_flags() -> None:
    cmd = dockerfile_cmd()
    assert cmd[:2] == ["memsvc", "serve"]
    parser = build_parser()
    # argparse has no public way to list a subcommand's options; its subparsers action holds them.
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve_flags = set(subcommands.choices["serve"]._option_string_actions)
    assert {"--host", "--port", "--data-dir"} <= serve_flags
    used = {a for a in cmd[2:] if a.startswith("--")}
    assert used <= serve_flags, f"flags `memsvc serve` does not have: {sorted(used - serve_flags)}"
    args = parser.parse_args(cmd[1:])  # an unknown flag or a bad value exits here
    assert (args.cmd, args.host, args.port, args.data_dir) == ("serve", "0.0.0.0", exposed_port(), "/data")


def test_dockerfile_healthcheck_hits_healthz() -> None:
    checks = [args for ins, args in dockerfile_instructions() if ins == "HEALTHCHECK"]
    assert checks and f":{exposed_port()}/healthz" in checks[-1]
    # python:3.11-slim has no curl or wget: the check must use Python.
    assert '"python"' in checks[-1] or "python " in checks[-1], checks[-1]
