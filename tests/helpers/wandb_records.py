"""Reading an offline W&B run file (``run-<id>.wandb``) without a network or W&B's servers.

The file is W&B's record log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
records, each with a 7-byte header (crc32, length uint16 LE, type: 1 full, 2 first, 3 middle,
4 last), holding serialized ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK = 32768


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        n = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind == 1:
            payload = chunk
        elif kind == 2:
            buf = chunk
            continue
        elif kind == 3:
            buf += chunk
            continue
        elif kind == 4:
            payload = buf + chunk
        else:
            continue
        r = pb.Record()
        r.ParseFromString(payload)
        yield r


def summary(path: Path) -> dict[str, Any]:
    """The run record, its config, every history row and the exit code."""
    import json

    out: dict[str, Any] = {"config": {}, "history": [], "exit_code": None, "run": None}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {"id": r.run.run_id, "name": r.run.display_name, "group": r.run.run_group}
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            row = {
                (i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item
            }
            out["history"].append(row)
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out
