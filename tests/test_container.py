"""The container files: Dockerfile, .dockerignore, docker-compose.yml and the HEALTHCHECK script.

Building and running the image takes minutes and root: that is scripts/image-check.sh, not
this file. Here: docker-compose.yml against the Compose Specification's JSON schema (the one
`docker compose config` uses, vendored in tests/data/compose-spec), what the Dockerfile and
the compose file name exists in the project, and the healthcheck script against real servers.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from aggregator.config import load_config
from builders import rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).parent / "data" / "compose-spec" / "compose-spec.json"
HEALTHCHECK = ROOT / "scripts" / "healthcheck.py"
COMPOSE_ENV = {"POSTGRES_PASSWORD": "from-the-environment"}


# --- Dockerfile and .dockerignore ---------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instruction(name: str) -> str:
    found = [args for word, args in dockerfile() if word == name]
    assert found, f"no {name} in the Dockerfile"
    return found[-1]  # the last one is the one that counts


def copies() -> dict[str, str]:
    """COPY destination -> source (single-source COPYs, flags dropped)."""
    out = {}
    for word, args in dockerfile():
        if word == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            *sources, dest = parts
            for source in sources:
                out[dest] = source
    return out


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins;
    `*` does not cross `/`, `**` does, `!` lets a path back in."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            pattern = line.lstrip("!").strip("/")
            rx = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
            rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            patterns.append((negate, re.compile(rx + r"\Z")))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, rx in patterns:
        if any(rx.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_entrypoint_and_cmd_are_a_real_command() -> None:
    entrypoint = json.loads(instruction("ENTRYPOINT"))
    cmd = json.loads(instruction("CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["aggregator"] and "aggregator" in scripts
    result = aggregator(*cmd, "--help")
    assert result.returncode == 0, result.stderr
    assert "Start the daemon" in result.stdout


def test_healthcheck_runs_a_file_the_image_gets() -> None:
    args = instruction("HEALTHCHECK")
    assert "--timeout=10s" in args  # the script gives up after 8 s, inside Docker's limit
    command = json.loads(args.split("CMD", 1)[1])
    assert command[0] == "python"
    source = copies()[command[1]]
    assert (ROOT / source).is_file()
    assert not dockerignore_excludes(source)
    assert Path(command[1]).parent == Path(instruction("WORKDIR"))
    assert (ROOT / source).resolve() == HEALTHCHECK  # the script the tests below run


def test_dockerignore_keeps_the_build_context_to_what_the_image_needs() -> None:
    for source in copies().values():
        assert not dockerignore_excludes(source.rstrip("/")), source
        assert not dockerignore_excludes(source.rstrip("/") + "/x/y.py"), source
    for local in (
        ".venv/lib/python3.11/site-packages/x.py",
        "data/aggregator.db",
        "benchmarks/work/farm/feed1.xml",
        "benchmarks/scaling/run.py",
        "tests/test_container.py",
        "exports/atom.xml",
        ".git/HEAD",
        "src/aggregator/__pycache__/config.cpython-311.pyc",
        "src/aggregator.egg-info/PKG-INFO",
        "config/aggregator.db",
        "scripts/image-check.sh",
        "anything-new-at-the-top",
    ):
        assert dockerignore_excludes(local), local


# --- docker-compose.yml ---------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (what this file uses)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise LookupError(f"{name}: {arg}")
        return ""

    return _VARIABLE.sub(one, value)


def compose(env: dict[str, str] = COMPOSE_ENV) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return dict(interpolate(raw, env))


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_spec() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_check_catches_mistakes() -> None:
    good = compose()
    typo = copy.deepcopy(good)
    typo["services"]["worker-1"]["healthcheck"]["start_perod"] = "1m"
    condition = copy.deepcopy(good)
    condition["services"]["worker-2"]["depends_on"]["db"]["condition"] = "service_ready"
    for broken in (typo, condition):
        assert schema_errors(broken)


def test_compose_needs_the_password_from_the_environment() -> None:
    with pytest.raises(LookupError, match="POSTGRES_PASSWORD"):
        compose({})
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "from-the-environment" not in text
    services = compose()["services"]
    for service in services.values():
        env = service.get("environment", {})
        for key, value in env.items():
            if "PASSWORD" in key:
                assert value == COMPOSE_ENV["POSTGRES_PASSWORD"], key
        assert "from-the-environment" not in env.get("AGGREGATOR_DATABASE_URL", "")


def test_compose_runs_two_workers_on_one_postgresql(tmp_path: Path) -> None:
    services = compose()["services"]
    workers = {name: s for name, s in services.items() if s.get("command") == ["run"]}
    assert len(workers) == 2
    db = services["db"]
    assert db["image"].startswith("postgres:")
    assert db["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    migrate = next(s for s in services.values() if s.get("command") == ["db", "upgrade"])
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"

    urls = set()
    for name, worker in workers.items():
        assert worker["depends_on"]["db"]["condition"] == "service_healthy", name
        migrate_name = next(n for n, s in services.items() if s is migrate)
        assert worker["depends_on"][migrate_name]["condition"] == "service_completed_successfully"
        urls.add(worker["environment"]["AGGREGATOR_DATABASE_URL"])
        # The worker's healthcheck is the image's.
        assert worker["healthcheck"]["test"] == [
            "CMD",
            *json.loads(instruction("HEALTHCHECK").split("CMD", 1)[1]),
        ]
    assert len(urls) == 1  # one database for all
    url = urls.pop()
    assert url.startswith("postgresql://") and "@db:" in url

    # The mounted config: the file AGGREGATOR_CONFIG names inside the mount exists, is a
    # valid config and turns on the HTTP face the healthcheck asks.
    worker = next(iter(workers.values()))
    source, target, *_ = worker["volumes"][0].split(":")
    inside = Path(worker["environment"]["AGGREGATOR_CONFIG"])
    assert inside.parent == Path(target)
    config = load_config(ROOT / source / inside.name, environ={})
    assert config.settings.http is not None
    assert config.settings.http.host == "0.0.0.0"  # reachable from the other containers
    published = services["worker-1"]["ports"][0]
    assert published.endswith(f":{config.settings.http.port}")
    result = aggregator("check", "--config", str(ROOT / source / inside.name))
    assert result.returncode == 0, result.stderr


# --- the healthcheck script --------------------------------------------------------------------


def healthcheck(
    tmp_path: Path, *args: str, config: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    environ.update(env)
    if config is not None:
        environ["AGGREGATOR_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_healthcheck_follows_the_status_of_healthz(server: FixtureServer, tmp_path: Path) -> None:
    server.add("/healthz", b'{"status": "ok", "age_seconds": 3.2}', content_type="application/json")
    ok = healthcheck(tmp_path, server.url("/healthz"))
    assert ok.returncode == 0 and ok.stdout.startswith("healthy: HTTP 200")

    reason = "no feed polled successfully for 9000 s (health_max_age is 7200 s)"
    body = json.dumps({"status": "unhealthy", "reason": reason})
    server.add("/healthz", body, status=503, content_type="application/json")
    stale = healthcheck(tmp_path, server.url("/healthz"))
    assert stale.returncode == 1
    assert stale.stdout.strip() == f"unhealthy: HTTP 503 from {server.url('/healthz')}: {reason}"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = healthcheck(tmp_path, f"http://127.0.0.1:{port}/healthz")
    assert down.returncode == 1 and down.stdout.startswith("unhealthy: cannot reach")


def test_healthcheck_reads_settings_http_from_the_config(
    server: FixtureServer, tmp_path: Path
) -> None:
    server.add("/healthz", b'{"status": "ok"}', content_type="application/json")
    feeds = [{"url": "http://127.0.0.1:1/feed.xml"}]
    # A wildcard listen address is asked on loopback; a proxy variable is not used for it.
    cfg = write_config(
        tmp_path / "feeds.yaml", feeds, http={"host": "0.0.0.0", "port": server.port}
    )
    result = healthcheck(tmp_path, config=cfg, http_proxy="http://127.0.0.1:1")
    assert result.returncode == 0, result.stdout
    assert server.hits("/healthz")

    # The default config path, as the daemon finds it (config/feeds.yaml in the workdir).
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config" / "feeds.yaml", feeds, http={"port": server.port})
    assert healthcheck(tmp_path).returncode == 0

    off = write_config(tmp_path / "off.yaml", feeds)
    result = healthcheck(tmp_path, config=off)
    assert result.returncode == 0
    assert "settings.http is off" in result.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text("settings: [\n")
    result = healthcheck(tmp_path, config=broken)
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: ") and "broken.yaml" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_healthcheck_against_the_daemon(server: FixtureServer, tmp_path: Path) -> None:
    """What the image does: `aggregator run` with settings.http, asked by the HEALTHCHECK."""
    url = server.add(
        "/feed.xml", rss("f", [{"title": "One", "link": "http://127.0.0.1:1/1", "guid": "1"}])
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": url}],
        tick="1s",
        full_text=False,
        http={"host": "127.0.0.1", "port": port},
    )
    before = healthcheck(tmp_path, config=cfg)
    assert before.returncode == 1 and "cannot reach" in before.stdout

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(cfg),
         "--database", f"sqlite:///{tmp_path / 'db.sqlite'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        result = healthcheck(tmp_path, config=cfg)
        while result.returncode != 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            result = healthcheck(tmp_path, config=cfg)
        assert result.returncode == 0, (
            result.stdout,
            (tmp_path / "daemon.log").read_text()[-2000:],
        )
        assert result.stdout.startswith(f"healthy: HTTP 200 from http://127.0.0.1:{port}/healthz")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    assert proc.returncode == 0
