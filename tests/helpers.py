"""Plain helpers for tests: read whole topics with kafka-python."""
from __future__ import annotations

import json
import re
import time

from kafka import KafkaConsumer, TopicPartition


def read_all(bootstrap: str, topic: str, expected: int | None = None, timeout: float = 30) -> list:
    """Every committed record of ``topic`` from the beginning up to its end offsets (or until ``expected`` have
    arrived); records of aborted transactions are skipped, as any downstream reader set to read_committed does."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000, isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        records, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            done = all(consumer.position(tp) >= ends[tp] for tp in partitions)
            if (expected is not None and len(records) >= expected) or (expected is None and done):
                break
        return records
    finally:
        consumer.close()


class WebhookReceiver:
    """A real HTTP server on loopback that records JSON POSTs; the first ``fail_first`` answers are 503."""

    def __init__(self, fail_first: int = 0):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        receiver = self
        self.received: list[dict] = []
        self.refused = 0
        self.fail_first = fail_first

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused < receiver.fail_first:
                    receiver.refused += 1
                    self.send_response(503)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def niks_in(blob: bytes | str, niks: set[str]) -> set[str]:
    """Which of ``niks`` occur anywhere in ``blob`` (every 16-digit window is looked at, so a NIK inside a longer
    run of digits is found too). Fast enough for whole topics, unlike one substring search per NIK."""
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    return set(re.findall(r"(?=([0-9]{16}))", text)) & niks


def stream_messages(response, timeout: float = 120):
    """The ``data`` of each server-sent event of an open ``requests`` response (comments skipped), as JSON: the
    worker's ``/regions/stream``. Fails after ``timeout`` seconds (the stream's comments every 15 s keep each read
    short of the read timeout)."""
    data, deadline = [], time.monotonic() + timeout
    for line in response.iter_lines(decode_unicode=True):
        assert time.monotonic() < deadline, "no end of the stream, nor the message waited for"
        if line.startswith("data: "):
            data.append(line[len("data: "):])
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []


def committed_offsets(bootstrap: str, group: str, topics=None) -> int:
    """Sum of the committed offsets of consumer group ``group`` (over ``topics`` if given)."""
    from confluent_kafka.admin import AdminClient
    return sum(committed_by_partition(AdminClient({"bootstrap.servers": bootstrap}), group, topics).values())


def committed_by_partition(admin, group: str, topics=None) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset consumer group ``group`` has committed, 0 where the listing has none (-1);
    every partition the group's offsets list, of ``topics`` if given. ``admin``: a confluent-kafka AdminClient."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in result.topic_partitions
            if topics is None or tp.topic in topics}


def unread(bootstrap: str, group: str, topics) -> int:
    """Records of ``topics`` (every partition) past what consumer group ``group`` has committed."""
    return sum(end - start for start, end in behind(bootstrap, group, topics).values())


def behind(bootstrap: str, group: str, topics) -> dict[str, tuple[int, int]]:
    """``topic[partition]`` -> (where ``group`` resumes: its committed offset, else the earliest, end offset) for
    every partition of ``topics`` with records past it: what a drill that timed out waiting for commits was stuck
    on."""
    from confluent_kafka import Consumer, TopicPartition
    marks = watermarks(bootstrap, topics)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in marks], timeout=10)
    finally:
        consumer.close()
    out = {}
    for tp in committed:
        low, high = marks[(tp.topic, tp.partition)]
        start = tp.offset if tp.offset >= 0 else low
        if start < high:
            out[f"{tp.topic}[{tp.partition}]"] = (start, high)
    return out


def end_offsets(bootstrap: str, topics) -> dict[tuple[str, int], int]:
    """(topic, partition) -> its end offset, for every partition of ``topics``."""
    return {tp: high for tp, (_, high) in watermarks(bootstrap, topics).items()}


def watermarks(bootstrap: str, topics) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (earliest offset, end offset), for every partition of ``topics`` that exists."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        metadata = consumer.list_topics(timeout=10).topics
        return {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                for t in topics if t in metadata for p in metadata[t].partitions}
    finally:
        consumer.close()


def assigned_members(bootstrap: str, group: str) -> int:
    """Members of consumer group ``group`` that hold partitions now (0 while it rebalances)."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future, or it never resolves
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    return sum(1 for m in description.members if m.assignment and m.assignment.topic_partitions)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process from /proc, or None when it is gone."""
    try:
        text = open(f"/proc/{pid}/stat").read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every living descendant of ``pid`` (whatever session or group it moved to): pid -> start time."""
    import os
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents[int(entry)] = stat
    out, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, started) in parents.items():
            if ppid == parent and child not in out:
                out[child] = started
                frontier.append(child)
    return out


def still_running(processes: dict[int, int]) -> list[int]:
    """Which of ``processes`` (pid -> start time, from ``descendants``) still run; zombies count as gone."""
    running = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            running.append(pid)
    return running


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition`` until it returns something truthy (returned); fail saying ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class MixedLoad:
    """Heavy mixed load on this machine while a drill runs (DEVELOPERS.md: a guarantee holds under load): stress-ng
    CPU, I/O-sync and disk-write stressors (Debian's stress-ng), stopped on exit; bounded by its own timeout."""

    def __init__(self, tmp, seconds: int = 900, cpu: int = 2):
        import shutil
        import subprocess
        assert shutil.which("stress-ng"), "stress-ng is installed by scripts/bootstrap.sh test"
        self.tmp = tmp
        self.proc = subprocess.Popen(
            ["stress-ng", "--cpu", str(cpu), "--io", "1", "--hdd", "1", "--hdd-bytes", "256M",
             "--temp-path", str(tmp), "--timeout", f"{seconds}s", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """stress-ng puts its stressors in process groups of their own: stop it as it expects (SIGINT to the
        parent, which ends its stressors), then make sure none is left."""
        import signal
        import subprocess
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)], check=False)
        left = subprocess.run(["pgrep", "-f", f"--temp-path {self.tmp}"], capture_output=True, text=True).stdout
        for pid in left.split():
            subprocess.run(["kill", "-KILL", pid], check=False)
