"""Load the code location in-process exactly as ``dagster definitions validate -w workspace.yaml`` does.

``dagster definitions validate`` (dagster/_cli/definitions.py) builds a workspace from the CLI's target
options with ``get_workspace_from_cli_opts(..., allow_in_process=True)``, reports each code location's
load error (``unwrap_user_code_error`` + ``remove_system_frames_from_error``) and then checks the asset
graph's partition mappings (``workspace.asset_graph.validate_partitions()``). :func:`validate` does the
same in this process, in a fraction of a second instead of a fresh interpreter (~5 s), and hands back
the outcome to assert on instead of log lines to parse.

The workspace imports its target module (``importlib.import_module``), which Python caches: the
module is imported afresh for the load (the environment of the test applies) and the module this
process had before is put back afterwards.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
WORKSPACE = REPO / "workspace.yaml"


@dataclass
class Location:
    """One code location of the workspace: its load error as the validate command shows it, or None."""

    name: str
    error: str | None = None  # message and stack, system frames removed (what the user sees)
    error_message: str | None = None  # the exception's own one-line message
    error_class: str | None = None
    repository_names: list[str] = field(default_factory=list)
    asset_keys: list[str] = field(default_factory=list)


@dataclass
class Validation:
    locations: dict[str, Location]
    partitions_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.partitions_error is None and all(loc.error is None for loc in self.locations.values())


def _workspace_modules(workspace: Path) -> list[str]:
    """The ``python_module`` targets the workspace file names (imported afresh for the load)."""
    config = yaml.safe_load(workspace.read_text(encoding="utf-8")) or {}
    names = []
    for entry in config.get("load_from", []):
        target = entry.get("python_module")
        if isinstance(target, str):
            names.append(target)
        elif isinstance(target, dict):
            names.append(target["module_name"])
    return names


@contextmanager
def _fresh_modules(names: list[str]) -> Iterator[None]:
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    try:
        yield
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


@contextmanager
def _validation_flag() -> Iterator[None]:
    previous = os.environ.get("DAGSTER_IS_DEFS_VALIDATION_CLI")
    os.environ["DAGSTER_IS_DEFS_VALIDATION_CLI"] = "1"  # as the validate command sets it
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_IS_DEFS_VALIDATION_CLI", None)
        else:
            os.environ["DAGSTER_IS_DEFS_VALIDATION_CLI"] = previous


@contextmanager
def _instance(home: str):
    """A Dagster instance configured by the repository's dagster.yaml (run launcher, coordinator,
    monitoring), its storage in ``home``: the instance the validate command would get from a
    ``DAGSTER_HOME`` holding that file."""
    from dagster import DagsterInstance

    shutil.copyfile(REPO / "dagster.yaml", Path(home) / "dagster.yaml")
    with DagsterInstance.from_config(home) as instance:
        yield instance


def validate(workspace: Path = WORKSPACE, *, module_name: str | None = None) -> Validation:
    """``dagster definitions validate -w WORKSPACE`` (or ``-m MODULE_NAME``), in-process, on a
    temporary instance configured by the repository's dagster.yaml."""
    from dagster import __version__ as dagster_version
    from dagster._cli.workspace.cli_target import get_workspace_from_cli_opts
    from dagster._utils.error import unwrap_user_code_error
    from dagster_shared.cli import WorkspaceOpts
    from dagster_shared.error import remove_system_frames_from_error

    if module_name:
        opts, modules = WorkspaceOpts(module_name=[module_name], working_directory=str(REPO)), [module_name]
    else:
        opts, modules = WorkspaceOpts(workspace=[str(workspace)]), _workspace_modules(workspace)
    result = Validation(locations={})
    with tempfile.TemporaryDirectory(prefix="gongshu-validate-") as home, _validation_flag(), \
            _fresh_modules(modules), _instance(home) as instance, \
            get_workspace_from_cli_opts(instance=instance, version=dagster_version, workspace_opts=opts,
                                        allow_in_process=True) as context:
        for name, entry in context.get_code_location_entries().items():
            loc = Location(name)
            if entry.load_error:
                shown = remove_system_frames_from_error(unwrap_user_code_error(entry.load_error))
                while shown.cause is not None and shown.cls_name in ("DagsterImportError",):
                    shown = shown.cause
                loc.error, loc.error_message, loc.error_class = shown.to_string(), shown.message, shown.cls_name
            else:
                code_location = entry.code_location
                assert code_location is not None
                for repo in code_location.get_repositories().values():
                    loc.repository_names.append(repo.name)
                    loc.asset_keys += sorted(n.asset_key.to_user_string() for n in repo.get_asset_node_snaps())
            result.locations[name] = loc
        try:
            context.asset_graph.validate_partitions()
        except Exception as exc:  # what the command reports as an invalid partition mapping
            result.partitions_error = f"{type(exc).__name__}: {exc}"
    return result
