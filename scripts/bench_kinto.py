"""Kinto for scripts/bench.sh: the WSGI entry point gunicorn serves, and the preloading of
the pull test's collection.

Why preload: the pull test needs 100,000 records in one collection, and Kinto's HTTP API
cannot write them in bounded time on this machine. With the memory backend every record
write costs time proportional to the records already stored (the memory permission
backend scans all its keys on each write); with PostgreSQL, writes to one collection are
serialised (concurrent batches get `409 Integrity constraint violated, please retry`) at
about 100 records/s. So the records (exactly those `sync-bench records` prints, the same
ones the Tidemark run pushes) are written through Kinto's own storage layer, the way Kinto
stores a record, before the clock starts. Only the pull is measured.

- `bench_kinto:application` reads the ini named by KINTO_INI. If KINTO_PRELOAD is set to
  `PARENT_ID=FILE`, the records in FILE are first stored under PARENT_ID in this process:
  the only way to fill the memory backend, which lives in the server process.
- `python bench_kinto.py INI PARENT_ID FILE` does the same into a persistent backend
  (PostgreSQL) before the server starts.

PARENT_ID is Kinto's id of a collection, `/buckets/{bucket}/collections/{collection}`; the
benchmark creates the bucket and the collection objects through the API as usual.
"""

import json
import os
import sys

import transaction
from pyramid.paster import get_app, setup_logging


def preload(registry, parent_id, path):
    """Stores every `id<TAB>data` line of `path` as a record under `parent_id`."""
    count = 0
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            record_id, data = line.rstrip("\n").split("\t", 1)
            record = json.loads(data)
            record["id"] = record_id
            registry.storage.create(resource_name="record", parent_id=parent_id, obj=record)
            count += 1
            if count % 1000 == 0:
                transaction.commit()
    transaction.commit()
    return count


def _app(ini):
    setup_logging(ini)
    return get_app(ini, "main")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} INI PARENT_ID FILE")
    ini, parent_id, path = sys.argv[1:]
    stored = preload(_app(ini).registry, parent_id, path)
    print(f"preloaded {stored} records under {parent_id}", file=sys.stderr)
else:
    application = _app(os.environ["KINTO_INI"])
    if os.environ.get("KINTO_PRELOAD"):
        _parent_id, _path = os.environ["KINTO_PRELOAD"].split("=", 1)
        preload(application.registry, _parent_id, _path)
