"""JSON Schema of the catalogue files, generated from the pydantic models (published in docs/)."""

from __future__ import annotations

import json
from pathlib import Path

from catalog.models import CatalogueFile, Resource

SCHEMAS = {"catalogue.schema.json": CatalogueFile, "resource.schema.json": Resource}


def schema_texts() -> dict[str, str]:
    return {
        name: json.dumps(model.model_json_schema(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        for name, model in SCHEMAS.items()
    }


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in schema_texts().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
