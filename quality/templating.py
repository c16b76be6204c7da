"""The one Jinja environment: every HTML page and mail body gongshu writes is a template file in
``quality/templates/``, autoescaped (a department's name or a value cannot become markup)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader

TEMPLATES = Path(__file__).parent / "templates"

ENV = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True)


def render(name: str, **context) -> str:
    """Render the template ``name`` (e.g. ``"freshness_stale.html.j2"``) with ``context``."""
    return ENV.get_template(name).render(**context)
