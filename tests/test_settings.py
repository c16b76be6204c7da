"""Settings and secrets enter through resources: one settings object read from the environment at the
edge, the secrets as Dagster ``EnvVar`` (shown by name, never by value), and no other module reading
the environment."""

from __future__ import annotations

import ast
import io
import sys
from pathlib import Path

import pytest
from dagster import DagsterInvalidConfigError, build_resources
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from assets.resources import Settings, SettingsError, channel_variables, resources_from_env
from catalog.loader import DEMO_CATALOGUE, load_catalogue
from pipelines import cli
from pipelines.definitions import build_definitions
from tests.codelocation import validate

REPO = Path(__file__).resolve().parent.parent
# The modules that may read the environment: where the settings and resources are built, and the
# command line (DAGSTER_HOME, DAGSTER_PG_URL, GONGSHU_DEBUG, serve-api --token-env). Benchmarks are
# command-line scripts of their own and are not scanned.
READERS = {"assets/resources.py", "pipelines/cli.py"}
PACKAGES = ("catalog", "warehouse", "guiji", "generator", "quality", "desensitize", "assets", "pipelines")
SECRETS = {  # the demo catalogue names GONGSHU_QZK_GAJ_URL (前置库) and GONGSHU_API_ZRZY_TOKEN (API)
    "GONGSHU_WAREHOUSE_URL": "postgresql+psycopg://gongshu:wh-s3cret@127.0.0.1:1/gongshu",
    "GONGSHU_SMTP_PASSWORD": "smtp-s3cret",
    "GONGSHU_PSEUDONYM_KEY": "pseudonym-s3cret-0123456789",
    "GONGSHU_QZK_GAJ_URL": "postgresql+psycopg://gaj:qzk-s3cret@127.0.0.1:1/qzk",
    "GONGSHU_API_ZRZY_TOKEN": "api-s3cret",
}
_OS_READS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _reads(node: ast.AST, aliases: set[str]) -> bool:
    if isinstance(node, ast.Attribute):  # os.environ, os.getenv(...), under any alias of os
        return node.attr in _OS_READS and isinstance(node.value, ast.Name) and node.value.id in aliases
    if isinstance(node, ast.ImportFrom):  # from os import environ
        return node.module == "os" and bool({a.name for a in node.names} & _OS_READS)
    return False


def environment_reads(source: str) -> list[int]:
    """Lines of ``source`` that touch the process environment through ``os``."""
    tree = ast.parse(source)
    aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
               for a in n.names if a.name == "os"}
    return sorted({n.lineno for n in ast.walk(tree) if _reads(n, aliases)})


def test_only_the_settings_module_and_the_command_line_read_the_environment() -> None:
    assert environment_reads("import os as o\nx = o.environ.get('A')\n") == [2]  # the scan finds a read
    assert environment_reads("from os import getenv\n") == [1]
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            lines = environment_reads(path.read_text(encoding="utf-8"))
            if lines and rel not in READERS:
                found[rel] = lines
    assert found == {}, "settings and secrets enter through assets/resources.py, not os.environ: " \
                        + ", ".join(f"{p}:{ln}" for p, ln in found.items())


def test_every_setting_has_its_one_default_and_the_home_folder_holds_what_gongshu_writes(tmp_path: Path) -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"GONGSHU_HOME": "", "GONGSHU_MAX_CONCURRENT": ""}) == Settings()  # empty: unset
    s = Settings.from_env({"GONGSHU_HOME": str(tmp_path), "GONGSHU_VOLUME_MIN_RATIO": "0.25",
                           "GONGSHU_ENGINEER_EMAILS": "a@x.cn; b@x.cn", "GONGSHU_MAX_CONCURRENT": "4",
                           "GONGSHU_SCORECARD_TICKET_WORKING_DAYS": "7", "GONGSHU_LOG_LEVEL": "info"})
    assert (s.reports, s.outbox, s.open_data, s.gx_docs) == \
        (tmp_path / "reports", tmp_path / "outbox", tmp_path / "open", tmp_path / "gx_docs")
    assert (s.volume_min_ratio, s.engineer_emails, s.max_concurrent, s.log_level) == (0.25, ["a@x.cn", "b@x.cn"], 4, "INFO")
    assert s.scorecard == {"GONGSHU_SCORECARD_TICKET_WORKING_DAYS": "7"}
    built = resources_from_env(settings=s)
    assert built["warehouse"].url == f"sqlite:///{(tmp_path / 'warehouse.db').resolve()}"  # no URL: SQLite at home
    assert (built["mailer"].outbox, built["open_data"].path) == (str(tmp_path / "outbox"), str(tmp_path / "open"))


def test_the_code_location_hands_the_secrets_to_its_resources_as_env_vars(monkeypatch) -> None:
    for name in channel_variables(load_catalogue(DEMO_CATALOGUE)):
        monkeypatch.delenv(name, raising=False)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GONGSHU_SMTP_HOST", "mail.gov.example")
    defs = build_definitions()
    repo = defs.get_repository_def()
    assert {k: set(v) for k, v in repo.get_env_vars_by_top_level_resource().items()} == {
        "GONGSHU_WAREHOUSE_URL": {"warehouse", "mailer"},  # the mailer audits through the warehouse
        "GONGSHU_SMTP_PASSWORD": {"mailer"},
        "GONGSHU_PSEUDONYM_KEY": {"pseudonym"},
        "GONGSHU_QZK_GAJ_URL": {"landing"},
        "GONGSHU_API_ZRZY_TOKEN": {"landing"},
    }
    # what the Dagster UI receives of the code location: the variables' names, never their values
    snapshot = serialize_value(RepositorySnap.from_def(repo))
    assert all(name in snapshot for name in SECRETS)
    assert "s3cret" not in snapshot
    assert '"smtp_host": "mail.gov.example"' in defs.resources["mailer"].get_resource_definition() \
        .config_schema.default_value_as_json_str  # a setting, not a secret: shown as it is


def test_an_unset_secret_leaves_its_default_and_the_run_resolves_a_set_one(monkeypatch, tmp_path: Path) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    built = resources_from_env()
    assert (built["pseudonym"].key, built["mailer"].smtp_password, built["landing"].variables) == (None, None, {})
    assert built["warehouse"].url.startswith("sqlite:///")
    with build_resources({"pseudonym": built["pseudonym"]}) as r:
        assert r.pseudonym.get_or_none() is None  # the keyed share outputs fail on their own; the 归集 goes on

    monkeypatch.setenv("GONGSHU_PSEUDONYM_KEY", SECRETS["GONGSHU_PSEUDONYM_KEY"])
    keyed = resources_from_env()["pseudonym"]
    with build_resources({"pseudonym": keyed}) as r:  # resolved as a run initialises the resource
        assert r.pseudonym.get().secret == SECRETS["GONGSHU_PSEUDONYM_KEY"].encode()
    monkeypatch.delenv("GONGSHU_PSEUDONYM_KEY")  # gone between the load and the run: Dagster names it
    with pytest.raises(DagsterInvalidConfigError, match="GONGSHU_PSEUDONYM_KEY"), \
            build_resources({"pseudonym": keyed}):
        pass


def test_a_malformed_setting_stops_the_code_location_loading_and_names_the_variable(monkeypatch) -> None:
    bad = {"GONGSHU_BLOCKING_MIN_PASS_RATE": "abc", "GONGSHU_SMTP_TLS": "maybe",
           "GONGSHU_WAREHOUSE_URL": "not a url with wh-s3cret"}
    with pytest.raises(SettingsError) as info:
        Settings.from_env(bad)
    message = str(info.value)
    assert all(name in message for name in bad) and "s3cret" not in message  # never a secret's value
    assert "GONGSHU_SMTP_TLS='maybe': 应为 none、starttls、ssl" in message

    # the code location as `dagster definitions validate -m pipelines.definitions` loads it, in-process
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    outcome = validate(module_name="pipelines.definitions")
    assert not outcome.ok
    (location,) = outcome.locations.values()
    assert location.error_class == "SettingsError"
    assert location.error_message.startswith(
        "assets.resources.SettingsError: 环境变量设置有误: GONGSHU_BLOCKING_MIN_PASS_RATE='abc'")
    # one message naming every variable, no traceback in it and never a secret's value
    assert all(name in location.error_message for name in bad) and "s3cret" not in location.error
    assert "Traceback" not in location.error_message and location.error_message.count("\n") <= 1


def test_the_commands_build_the_same_resources_as_the_code_location(monkeypatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", url)
    monkeypatch.setenv("GONGSHU_PSEUDONYM_KEY", SECRETS["GONGSHU_PSEUDONYM_KEY"])
    defs = build_definitions()
    with cli.resources(load_catalogue(DEMO_CATALOGUE)) as r:
        assert {name for name in defs.resources if getattr(r, name, None) is not None} == set(defs.resources)
        assert r.warehouse.get().url == url and r.mailer.get().outbox == tmp_path / "gongshu-home" / "outbox"
        assert r.pseudonym.get().secret == SECRETS["GONGSHU_PSEUDONYM_KEY"].encode()


def test_dagster_pg_url_is_refused_with_a_driver_dagster_postgres_cannot_use(monkeypatch, tmp_path: Path) -> None:
    """SQLAlchemy 2.1 gives a plain ``postgresql://`` psycopg 3, whose server-side parameters break
    dagster-postgres's NOTIFY at a run's first event: ``gongshu instance`` says so in one line, without the
    URL's password, and writes nothing; ``postgresql+psycopg2://`` is written as the instance's storage."""
    from pipelines.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://dagster:s3cret@127.0.0.1:5432/dagster")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["instance", "--quiet"]) == 2
    assert "postgresql+psycopg2://" in err.getvalue() and "s3cret" not in err.getvalue()
    assert not (tmp_path / "dagster" / "dagster.yaml").exists()
    from pipelines.cli import dagster_pg_url

    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://dagster:s3cret@127.0.0.1:5432/dagster")
    assert dagster_pg_url() == "postgresql+psycopg2://dagster:s3cret@127.0.0.1:5432/dagster"
