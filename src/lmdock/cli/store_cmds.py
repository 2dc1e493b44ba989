"""`lmdock ls` and `lmdock get`: the local model store, no server needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmdock.cli.client import JsonOption, console, fail, human_bytes
from lmdock.cli.progress import byte_progress
from lmdock.core.config import default_models_dir, option
from lmdock.core.errors import LmdockError
from lmdock.models.capabilities import capabilities
from lmdock.models.downloads import download_file, parse_spec, plan_download
from lmdock.models.sampling_defaults import sampling_defaults
from lmdock.models.store import record_for, scan

ModelsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--models-dir", envvar=option("models_dir").env, help="Model store (default ~/.lmdock/models)."
    ),
]

_SHORT = {"trained_for_tool_use": "tools", "reasoning": "reasoning", "vision": "vision"}


def _sampling_cell(d: dict) -> str:
    """`t=0.2 k=40 p=0.95 min_p=0.05` plus where non-built-in values came from."""
    text = f"t={d['temperature']:g} k={d['top_k']} p={d['top_p']:g} min_p={d['min_p']:g}"
    if d["repeat_penalty"] != 1.0:
        text += f" rep={d['repeat_penalty']:g}"
    origins = sorted(set(d["source"].values()) - {"lmdock"})
    return text + (f" ({'+'.join(origins)})" if origins else "")


def ls(models_dir: ModelsDirOption = None, as_json: JsonOption = False) -> None:
    """List the models in the store."""
    records = scan(models_dir or default_models_dir())
    rows = []
    for r in records:
        meta = r.metadata
        caps = capabilities(r)
        rows.append(
            {
                "key": r.key,
                "publisher": r.publisher or None,
                "architecture": meta.architecture,
                "params": meta.size_label,
                "quantization": meta.quantization,
                "size_bytes": r.size_bytes,
                "max_context_length": meta.context_length,
                "capabilities": [_SHORT[name] for name, on in caps.as_dict().items() if on],
                "sampling_defaults": sampling_defaults(r).as_dict(),
                "path": str(r.path),
                "error": meta.error,
            }
        )
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("No models yet. Download one with `lmdock get <publisher>/<repo>`.")
        return
    table = Table(box=None)
    table.add_column("MODEL", no_wrap=True, min_width=max(len(row["key"]) for row in rows))
    for name in ("PARAMS", "ARCH", "QUANT", "SIZE", "CONTEXT"):
        table.add_column(name, no_wrap=True)
    table.add_column("CAPABILITIES", overflow="fold")
    table.add_column("SAMPLING DEFAULTS", overflow="fold")
    for row in rows:
        caps = "[red]unreadable[/red]" if row["error"] else ", ".join(row["capabilities"])
        table.add_row(
            row["key"],
            row["params"] or "-",
            row["architecture"],
            row["quantization"] or "-",
            human_bytes(row["size_bytes"]),
            str(row["max_context_length"] or "-"),
            caps,
            _sampling_cell(row["sampling_defaults"]),
        )
    console.print(table)


def get(
    model: Annotated[str, typer.Argument(help="publisher/repo[/file.gguf][@quant] or a huggingface.co URL.")],
    quantization: Annotated[str | None, typer.Option("--quantization", "-q", help="e.g. Q4_K_M")] = None,
    models_dir: ModelsDirOption = None,
) -> None:
    """Download a GGUF model from Hugging Face (HF_ENDPOINT) into the store; resumes a partial download."""
    store = models_dir or default_models_dir()
    try:
        files = plan_download(parse_spec(model, quantization))
        total = sum(f.size or 0 for f in files)
        console.print(
            f"Downloading {', '.join(f'{f.repo_id}/{f.filename}' for f in files)} ({human_bytes(total)})"
        )
        advance = byte_progress("Downloading", total=total or 1)
        paths = [download_file(f, store, progress=advance, resumed=advance) for f in files]
    except LmdockError as exc:
        fail(exc.message)
    record = record_for(paths[0], store)
    console.print(f"Model ready: [bold]{record.key}[/bold] ({paths[0]})", highlight=False)
