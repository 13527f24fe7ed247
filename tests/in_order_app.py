"""A Faust app whose one agent reads a topic through faust_fixes.InOrder, after dropping the first delivery of one
offset (what Faust does around recovery): prints each offset it processes. Used by tests/test_faust_fixes.py."""
import os
import sys

import faust

from streams import faust_fixes

faust_fixes.install()
app = faust.App(os.environ["APP_ID"], broker=f"kafka://{os.environ['BOOTSTRAP']}", web_enabled=False,
                consumer_auto_offset_reset="earliest", datadir=os.environ["DATADIR"])
topic = app.topic(os.environ["TOPIC"], key_type=bytes, value_type=bytes, key_serializer="raw",
                  value_serializer="raw")
drop = int(os.environ["DROP_OFFSET"])
gate = faust_fixes.InOrder(app, topic.get_topic_name())
dropped = []


@app.agent(topic)
async def read(stream):
    async for event in stream.events():
        if event.message.offset == drop and not dropped:
            dropped.append(drop)
            continue
        if await gate.admit(event):
            print(f"processed={event.message.offset}", flush=True)


if __name__ == "__main__":
    app.main()
