"""What an offline W&B run recorded, read from its ``run-<id>.wandb`` file: job type, group,
tags, config keys, the final summary and the logged keys.

    python scripts/wandb_readback.py runs/wandb/offline-run-*          # one block per run folder

Why: an offline run is only seen on W&B after ``wandb sync``; this shows, before uploading,
whether a run carries what comparing runs needs (the full config, the best Dice, the job type).
The file is W&B's record log (LevelDB's log format: 32 KiB blocks, 7-byte record headers)
holding ``wandb_internal_pb2.Record`` messages; W&B's own Python reader left with wandb 0.2x.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

HEADER = 7  # ":W&B", a 2-byte magic number, a version byte
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def record_bytes(path: Path) -> Iterator[bytes]:
    """The serialised records of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    position, pending = HEADER, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        length = int.from_bytes(data[position + 4:position + 6], "little")
        kind = data[position + 6]
        if kind == 0:  # zero padding up to the block's end
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(folder: str | Path, wait_s: float = 30.0) -> dict[str, Any]:
    """``{"id", "job_type", "group", "tags", "config", "summary", "history", "logged"}`` of one
    offline run folder (``offline-run-<time>-<id>``): the config and summary as their final
    values, every logged value per key in ``history``. W&B's service process writes the file
    after ``wandb.finish()`` returns, so a run read at once may not hold its run record yet:
    read again until it does, for at most ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        run = _read_offline_run(Path(folder))
        if "id" in run or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _read_offline_run(folder: Path) -> dict[str, Any]:
    (path,) = folder.glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "summary": {}, "history": {}}
    for data in record_bytes(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, job_type=r.job_type, group=r.run_group, tags=list(r.tags))
            run["config"].update({_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run["config"].update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            run["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "history":
            for item in record.history.item:
                run["history"].setdefault(_key(item), []).append(json.loads(item.value_json))
    run["logged"] = sorted(run["history"])
    return run


def describe(run: dict[str, Any]) -> str:
    config = {k: v for k, v in run["config"].items() if k != "_wandb"}
    best = {k: v for k, v in sorted(run["summary"].items()) if "dice" in k or k.startswith("best")}
    return "\n".join([
        f"run {run.get('id')}  job_type={run.get('job_type')!r}  group={run.get('group')!r}  tags={run.get('tags')}",
        f"  config: {len(config)} top-level keys: {', '.join(sorted(config))}",
        f"  summary: {json.dumps(best, sort_keys=True)}",
        f"  logged: {', '.join(run['logged'])}",
    ])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="offline-run-* folders")
    args = parser.parse_args(argv)
    for folder in args.runs:
        print(describe(read_offline_run(folder)))


if __name__ == "__main__":
    main()
