"""A Flower client mod that writes down every message a node sends, for the whitelist test.

`build_recording_client_app` wraps the node's real ClientApp (`node.client_app`)
in an outer ClientApp whose only mod is `recording_mod`: each train, evaluate
and query message goes through the node's own handlers unchanged, and the mod
writes the reply's full content to a folder: every record's name and type,
every scalar's key, type and value (bytes as hex), every array's name, shape and
dtype (the values go to an .npz beside it), an error reply's code and reason,
and the text of an exception the handler raised. The simulation engine runs
the ClientApp in Ray workers, so each message becomes one file, not a list entry.

`read_log` reads the folder back; `record_values` and `typed_scalars` read a
recorded reply. Passing this module's factory as `simulate_study`'s
`client_app`, with the folder in `LOG_ENV`, records a whole study.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from node.client_app import build_client_app

# The simulated nodes run in Ray workers, which cannot import tests/: ship this module by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

LOG_ENV = "FEDSYNTH_TEST_MESSAGE_LOG"


def build_recording_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """The node's real ClientApp for `overrides`, with every reply recorded under the
    folder named by the environment variable `LOG_ENV` (read here, in the coordinator's
    process, and carried to the workers inside the mod)."""
    node_app = build_client_app(overrides)
    app = ClientApp(mods=[recording_mod(os.environ[LOG_ENV])])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return node_app(msg, context)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return node_app(msg, context)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return node_app(msg, context)

    return app


def recording_mod(log_dir: str) -> Mod:
    """A Flower mod writing one JSON file (and one .npz of arrays) per reply."""

    def record(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        stem = f"{time.time_ns()}-{uuid.uuid4().hex}"
        entry: dict[str, Any] = {
            "node_id": context.node_id,
            "partition": context.node_config.get("partition-id"),
            "message_type": msg.metadata.message_type,
            "received": describe_content(msg.content) if msg.has_content() else None,
        }
        started = time.monotonic()
        try:
            reply = call_next(msg, context)
        except BaseException as exc:  # what Flower turns into an error reply; re-raised
            entry["raised"] = f"{type(exc).__name__}: {exc}"
            _write(Path(log_dir), stem, entry, {})
            raise
        entry["seconds"] = time.monotonic() - started
        entry["error"] = ({"code": reply.error.code, "reason": reply.error.reason}
                          if reply.has_error() else None)
        entry["sent"] = describe_content(reply.content) if reply.has_content() else None
        arrays = _arrays(reply.content) if reply.has_content() else {}
        _write(Path(log_dir), stem, entry, arrays)
        return reply

    return record


def describe_content(content: RecordDict) -> dict[str, Any]:
    """Every record of `content`: its type, and its arrays' layout or its scalars."""
    described: dict[str, Any] = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            described[name] = {"type": "ArrayRecord", "arrays": {
                key: {"shape": list(array.numpy().shape), "dtype": str(array.numpy().dtype)}
                for key, array in record.items()}}
        elif isinstance(record, (MetricRecord, ConfigRecord)):
            described[name] = {"type": type(record).__name__,
                               "values": {key: _scalar(value) for key, value in record.items()}}
        else:
            described[name] = {"type": type(record).__name__, "repr": repr(record)[:2000]}
    return described


def _scalar(value: Any) -> Any:
    """[type name, JSON value]; bytes as hex, lists element by element."""
    if isinstance(value, list):
        return ["list", [_scalar(v) for v in value]]
    if isinstance(value, bytes):
        return ["bytes", value.hex()]
    return [type(value).__name__, value]


def _arrays(content: RecordDict) -> dict[str, np.ndarray]:
    return {f"{name}/{key}": array.numpy() for name, record in content.items()
            if isinstance(record, ArrayRecord) for key, array in record.items()}


def _write(folder: Path, stem: str, entry: dict[str, Any], arrays: dict[str, np.ndarray]
           ) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if arrays:
        np.savez(folder / f"{stem}.npz", **arrays)
    # Written last and renamed into place: a reader never sees half a message.
    part = folder / f"{stem}.json.part"
    part.write_text(json.dumps(entry))
    part.rename(folder / f"{stem}.json")


def read_log(folder: Path) -> list[dict[str, Any]]:
    """The recorded messages in the order they were received, each with its
    arrays under "arrays" (name "record/key" -> ndarray)."""
    entries = []
    for path in sorted(folder.glob("*.json")):
        entry = json.loads(path.read_text())
        entry["arrays"] = {}
        if path.with_suffix(".npz").exists():
            with np.load(path.with_suffix(".npz")) as stored:
                entry["arrays"] = {k: stored[k] for k in stored.files}
        entries.append(entry)
    return entries


def record_values(message: dict[str, Any], record: str, side: str = "sent") -> dict[str, Any]:
    """{key: value} of a recorded Metric/ConfigRecord (bytes as bytes, lists as lists)."""
    return {k: plain(v) for k, v in message[side][record]["values"].items()}


def plain(typed: list) -> Any:
    """The value of a recorded [type, value]."""
    kind, value = typed
    if kind == "list":
        return [plain(v) for v in value]
    return bytes.fromhex(value) if kind == "bytes" else value


def value_kinds(typed: list) -> set[str]:
    """The type of a recorded value, or of its elements for a list."""
    kind, value = typed
    return {k for k, _ in value} if kind == "list" else {kind}


def typed_scalars(message: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(record/key, type, value) of every scalar a reply holds, list elements included."""
    for name, record in message["sent"].items():
        for key, typed in record.get("values", {}).items():
            kind, value = typed
            for element in (value if kind == "list" else [typed]):
                yield f"{name}/{key}", element[0], plain(element)
