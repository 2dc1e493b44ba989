"""`lmdock batch ls | show | cancel | results | delete`: Message Batches on a running server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lmdock.cli.client import HostOption, JsonOption, PortOption, Server, console, fail

batch_app = typer.Typer(help="Message Batches (/v1/messages/batches) on the server.", no_args_is_help=True)
BatchArgument = Annotated[str, typer.Argument(help="Batch id (msgbatch_…, see `lmdock batch ls`).")]
PROGRESS_HEADER = "lmdock-requests-completed"
_FINAL = ("succeeded", "errored", "canceled", "expired")


def _get(server: Server, path: str) -> httpx.Response:
    try:
        response = httpx.get(server.base_url + path, headers=server.headers, timeout=30)
    except httpx.ConnectError:
        server.not_running()
    except httpx.HTTPError as exc:
        fail(f"request to {server.base_url}{path} failed: {exc}")
    if response.status_code >= 400:
        server_error = response.json().get("error", {}) if response.text.startswith("{") else {}
        fail(f"error {response.status_code}: {server_error.get('message') or response.text[:200]}")
    return response


def _total(batch: dict[str, Any]) -> int:
    return sum(batch["request_counts"].values())


def _when(stamp: str | None) -> str:
    return stamp.replace("T", " ")[:19] if stamp else "-"


@batch_app.command("ls")
def ls(
    limit: Annotated[int, typer.Option(help="How many batches, newest first.")] = 20,
    host: HostOption = "127.0.0.1",
    port: PortOption = 1234,
    as_json: JsonOption = False,
) -> None:
    """List message batches, newest first."""
    page = Server(host, port).request("GET", f"/v1/messages/batches?limit={limit}")
    batches = page["data"]
    if as_json:
        console.print_json(json.dumps(batches))
        return
    if not batches:
        console.print("No message batches.")
        return
    table = Table(box=None)
    for name in ("ID", "STATUS", "REQUESTS", *(s.upper() for s in _FINAL), "CREATED", "ENDED"):
        table.add_column(name, no_wrap=True)
    for b in batches:
        counts = b["request_counts"]
        table.add_row(
            b["id"],
            b["processing_status"],
            str(_total(b)),
            *(str(counts[s]) for s in _FINAL),
            _when(b["created_at"]),
            _when(b["ended_at"]),
        )
    console.print(table)


def _print_batch(batch: dict[str, Any]) -> None:
    counts = batch["request_counts"]
    console.print(f"{batch['id']}  {batch['processing_status']}", highlight=False)
    console.print(
        f"  requests: {_total(batch)} ({', '.join(f'{counts[s]} {s}' for s in _FINAL)})", highlight=False
    )
    console.print(f"  created:  {_when(batch['created_at'])}   expires: {_when(batch['expires_at'])}")
    if batch.get("ended_at"):
        console.print(f"  ended:    {_when(batch['ended_at'])}")
    if batch.get("results_url"):
        console.print(f"  results:  {batch['results_url']}", highlight=False)


@batch_app.command("show")
def show(
    batch_id: BatchArgument,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Show a progress bar until a running batch ends.")
    ] = True,
    host: HostOption = "127.0.0.1",
    port: PortOption = 1234,
    as_json: JsonOption = False,
) -> None:
    """Show a batch; while it runs, a progress bar follows it until it ends (Ctrl-C stops watching)."""
    server = Server(host, port)
    path = f"/v1/messages/batches/{batch_id}"
    response = _get(server, path)
    batch = response.json()
    if batch["processing_status"] != "ended" and wait and not as_json:
        batch = _follow(server, path, batch, int(response.headers.get(PROGRESS_HEADER, 0)))
    if as_json:
        console.print_json(json.dumps(batch))
    else:
        _print_batch(batch)


def _follow(server: Server, path: str, batch: dict[str, Any], done: int) -> dict[str, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(batch["id"], total=_total(batch), completed=done)
            while batch["processing_status"] != "ended":
                time.sleep(1.0)
                response = _get(server, path)
                batch = response.json()
                label = f"{batch['id']} {batch['processing_status']}"
                bar.update(task, completed=int(response.headers.get(PROGRESS_HEADER, 0)), description=label)
            bar.update(task, completed=_total(batch))
    except KeyboardInterrupt:
        pass
    return batch


@batch_app.command("cancel")
def cancel(batch_id: BatchArgument, host: HostOption = "127.0.0.1", port: PortOption = 1234) -> None:
    """Cancel a running batch (requests already finished keep their results)."""
    batch = Server(host, port).request("POST", f"/v1/messages/batches/{batch_id}/cancel")
    console.print(f"{batch['id']}: {batch['processing_status']}", highlight=False)


@batch_app.command("delete")
def delete(batch_id: BatchArgument, host: HostOption = "127.0.0.1", port: PortOption = 1234) -> None:
    """Delete an ended batch and its results."""
    result = Server(host, port).request("DELETE", f"/v1/messages/batches/{batch_id}")
    console.print(f"Deleted {result['id']}", highlight=False)


@batch_app.command("results")
def results(
    batch_id: BatchArgument,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the JSONL here instead of stdout.")
    ] = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 1234,
) -> None:
    """Print an ended batch's results as JSONL (one line per request)."""
    server = Server(host, port)
    url = server.base_url + f"/v1/messages/batches/{batch_id}/results"
    try:
        with httpx.stream("GET", url, headers=server.headers, timeout=60) as response:
            if response.status_code >= 400:
                response.read()
                error = response.json().get("error", {}) if response.text.startswith("{") else {}
                fail(f"error {response.status_code}: {error.get('message') or response.text[:200]}")
            out = output.open("w") if output else sys.stdout
            try:
                for line in response.iter_lines():
                    if line:
                        out.write(line + "\n")
            finally:
                if output:
                    out.close()
    except httpx.ConnectError:
        server.not_running()
    if output:
        console.print(f"Wrote {output}", highlight=False)
