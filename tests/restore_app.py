"""A Faust app with one table and nothing else to do: once its tables are recovered from their changelogs it writes
the table's contents to ``OUT`` as JSON. Used by tests/test_faust_fixes.py to check the bulk restore against a
changelog the test wrote (BULK=0: Faust's own loop; HANDOVER_AFTER=N: the bulk read hands over after N records)."""
import json
import os
from pathlib import Path

import faust

from streams import faust_fixes

faust_fixes.install(bulk_restore=os.environ.get("BULK", "1") == "1")
if os.environ.get("HANDOVER_AFTER"):
    faust_fixes.BULK_RESTORE_HANDOVER_AFTER = int(os.environ["HANDOVER_AFTER"])
app = faust.App(os.environ["APP_ID"], broker=f"kafka://{os.environ['BOOTSTRAP']}", web_enabled=False,
                store=os.environ["STORE"], datadir=os.environ["DATADIR"], topic_partitions=int(os.environ["PARTITIONS"]),
                topic_replication_factor=1, consumer_auto_offset_reset="earliest")
table = app.Table("states", default=None, key_type=str)
# the table's partitions are assigned with this topic's: without a stream nothing would be restored
topic = app.topic(f"{os.environ['APP_ID']}-in", key_type=str, value_serializer="json")


@app.agent(topic)
async def nothing(stream):
    async for _ in stream:
        pass


@app.timer(0.5)
async def dump_when_recovered():
    if faust_fixes.worker_state(app)["recovered"] and not Path(os.environ["OUT"]).exists():
        out = Path(os.environ["OUT"])
        out.with_suffix(".tmp").write_text(json.dumps(dict(table.items())))
        out.with_suffix(".tmp").rename(out)


if __name__ == "__main__":
    app.main()
