#!/usr/bin/env python3
"""The measurements of bench/run (python3 standard library only; psql, pgbench, pg_recvlogical and kcat do the I/O).

bench/run builds, brings a dev stack up and down, and calls this with PGURL, KAFKA_BOOTSTRAP and DEVSTACK_STATE set.
Every phase writes into a table, publications, slots and topics of its own, named after the run id, so a run never
sees another's data (--quick runs inside scripts/test, on the test suite's stack).
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PG_BIN = "/usr/lib/postgresql/15/bin"
TS_RE = re.compile(rb'"ts": ?(\d+)')


def log(msg):
    print(f"[bench] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL, Kafka and /proc helpers


class Pg:
    def __init__(self, url):
        self.url = url

    def sql(self, query, timeout=3600):
        r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url, "-c", query],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise BenchError(f"psql failed: {r.stderr.strip()} (query: {query[:200]})")
        return r.stdout.strip()

    def file(self, path):
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url, "-f", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"psql -f {path} failed: {r.stderr.strip()}")

    def lsn(self):
        return self.sql("SELECT pg_current_wal_insert_lsn()")

    def slot_lag(self, slot):
        v = self.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn)::bigint "
                     f"FROM pg_replication_slots WHERE slot_name = '{slot}'")
        return int(v) if v else None

    def slot_pid(self, slot):
        v = self.sql(f"SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}'")
        return int(v) if v else None

    def advance_slot(self, slot):
        self.sql(f"SELECT pg_replication_slot_advance('{slot}', pg_current_wal_insert_lsn())")


def kafka_end_offsets(bootstrap, topic, partitions=3):
    args = ["kcat", "-Q", "-b", bootstrap]
    for p in range(partitions):
        args += ["-t", f"{topic}:{p}:-1"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    offs = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\S+ \[(\d+)\] offset (-?\d+)", line)
        if m:
            offs[int(m.group(1))] = max(0, int(m.group(2)))
    if r.returncode != 0 or len(offs) != partitions:
        raise BenchError(f"kcat -Q {topic}: {r.stderr.strip() or r.stdout.strip()}")
    return offs


def kafka_count(bootstrap, topic):
    try:
        return sum(kafka_end_offsets(bootstrap, topic).values())
    except BenchError:
        return 0


END_RE = re.compile(r"Reached end of topic (\S+) \[(\d+)\] at offset (\d+)")


def kafka_consumer_ends(bootstrap, topic, partitions=3):
    """{isolation level: {partition: end offset}} as a consumer sees them (kcat -Q is a producer, to which
    isolation.level means nothing): read_committed ends at the last stable offset, below the first open
    transaction; read_uncommitted at the high watermark. Equal on every partition = no transaction open."""
    procs = {iso: subprocess.Popen(["kcat", "-C", "-b", bootstrap, "-X", f"isolation.level={iso}",
                                    "-X", "fetch.wait.max.ms=5", "-t", topic, "-o", "end", "-e", "-f", ""],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for iso in ("read_committed", "read_uncommitted")}
    ends = {}
    for iso, p in procs.items():
        _, err = p.communicate(timeout=60)
        ends[iso] = {int(m.group(2)): int(m.group(3)) for m in END_RE.finditer(err) if m.group(1) == topic}
        if p.returncode != 0 or len(ends[iso]) != partitions:
            raise BenchError(f"kcat -C -o end {topic} ({iso}): {err.strip()[-300:]}")
    return ends


def kafka_committed_count(bootstrap, topic, start=None, partitions=3):
    """Records a read_committed consumer reads from start (default: the beginning) to the end of each partition.
    In exactly-once mode this is the count to check: end offsets also count the transaction markers."""
    total = 0
    for p in range(partitions):
        r = subprocess.run(["kcat", "-C", "-b", bootstrap, "-X", "isolation.level=read_committed", "-t", topic,
                            "-p", str(p), "-o", str(start[p]) if start else "beginning", "-e", "-q", "-f", "\n"],
                           capture_output=True, timeout=900)
        if r.returncode != 0:
            raise BenchError(f"kcat -C {topic}:{p}: {r.stderr.decode(errors='replace').strip()[-300:]}")
        total += r.stdout.count(b"\n")
    return total


def kafka_latencies_ms(bootstrap, topic, start, end):
    """Broker LogAppendTime minus the insert timestamp ("ts", microseconds) in each record's payload. In exactly-once
    mode the append time is before the transaction commits: VisibleConsumer measures when a record becomes visible."""
    lat = []
    for p, s in start.items():
        n = end[p] - s  # an upper bound in exactly-once mode (markers take offsets); -e stops at the end
        if n <= 0:
            continue
        r = subprocess.run(["kcat", "-C", "-b", bootstrap, "-X", "isolation.level=read_committed", "-t", topic,
                            "-p", str(p), "-o", str(s), "-c", str(n), "-e", "-q", "-f", "%T %s\n"],
                           capture_output=True, timeout=600)
        for line in r.stdout.split(b"\n"):
            sp = line.find(b" ")
            m = TS_RE.search(line)
            if sp > 0 and m:
                lat.append(int(line[:sp]) - int(m.group(1)) / 1000.0)
    return lat


class VisibleConsumer:
    """Live read_committed consumers (one kcat per partition, from given offsets) that stamp each record with the
    wall clock when it arrives: latency = arrival − the payload's ts (clock_timestamp() at INSERT, same machine and
    clock). This is PostgreSQL commit → visible to a read_committed consumer, the same for both delivery modes (in
    exactly-once mode a record is visible only once its Kafka transaction committed). librdkafka's consumer
    defaults otherwise (fetch.wait.max.ms 500, fetch.min.bytes 1: the broker answers a waiting fetch as soon as
    records, or a commit marker that makes them stable, are appended)."""

    def __init__(self, bootstrap, topic, start):
        self.lat, self.lock, self.procs, self.threads = [], threading.Lock(), [], []
        for p, off in sorted(start.items()):
            proc = subprocess.Popen(["kcat", "-C", "-u", "-q", "-b", bootstrap, "-X", "isolation.level=read_committed",
                                     "-t", topic, "-p", str(p), "-o", str(off), "-f", "%s\n"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            t = threading.Thread(target=self._read, args=(proc,), daemon=True)
            t.start()
            self.procs.append(proc)
            self.threads.append(t)

    def _read(self, proc):
        fd, rest = proc.stdout.fileno(), b""
        while True:
            chunk = os.read(fd, 1 << 16)
            now_ms = time.time() * 1000.0
            if not chunk:
                return
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            got = [now_ms - int(m.group(1)) / 1000.0 for m in map(TS_RE.search, lines) if m]
            with self.lock:
                self.lat.extend(got)

    def count(self):
        with self.lock:
            return len(self.lat)

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.count() < n:
            time.sleep(0.05)
        return self.count() >= n

    def stop(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for t in self.threads:
            t.join(10)
        with self.lock:
            return list(self.lat)


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)
    except (OSError, IndexError):
        return None


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_context_switches(pid):
    """Voluntary + involuntary context switches of every thread of a process."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Sampler(threading.Thread):
    """Keeps the last CPU seconds and peak RSS of a process that may exit on its own (e.g. a walsender)."""

    def __init__(self, pid, interval=0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.cpu, self.hwm_kb = pid, interval, None, None
        self.stop_event = threading.Event()
        self.start()

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def sample(self):
        c, h = proc_cpu_seconds(self.pid), proc_status_kb(self.pid, "VmHWM")
        if c is not None:
            self.cpu = c
        if h is not None:
            self.hwm_kb = h

    def stop(self):
        self.sample()
        self.stop_event.set()
        return self.cpu, self.hwm_kb


class LagSampler(threading.Thread):
    """Samples a slot's lag (server WAL insert position minus confirmed_flush_lsn) the same way for every contender."""

    def __init__(self, pg, slot, interval=0.5):
        super().__init__(daemon=True)
        self.pg, self.slot, self.interval, self.max = pg, slot, interval, 0
        self.stop_event = threading.Event()
        self.start()

    def run(self):
        while not self.stop_event.is_set():
            try:
                v = self.pg.slot_lag(self.slot)
                if v is not None:
                    self.max = max(self.max, v)
            except Exception:  # a sample lost to a busy machine is not an error
                pass
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join()
        return self.max


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram_buckets(text, name):
    """{le: cumulative count} of a Prometheus histogram, summed over its labels."""
    buckets = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            le = float("inf") if le == "+Inf" else float(le)
            buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantile(before, after, q):
    """The q-quantile of the observations between two scrapes, interpolated within buckets (as PromQL does)."""
    les = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in les]
    if not counts or counts[-1] <= 0:
        return None
    rank, prev_le, prev_c = q * counts[-1], 0.0, 0.0
    for le, c in zip(les, counts):
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0)
        prev_le, prev_c = le, c
    return None


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


def lat_summary(lat):
    s = sorted(lat)
    return {"count": len(s), "p50_ms": percentile(s, 0.50), "p99_ms": percentile(s, 0.99),
            "max_ms": s[-1] if s else None}


# ---------------------------------------------------------------------------------------------------------------
# Contenders


def metric_labeled(text, name, label):
    """The sum of a metric's samples that carry label (e.g. 'outcome="committed"')."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line.split("}", 1)[0]:
            total += float(line.rsplit(" ", 1)[1])
    return total


DELIVERIES = ("at_least_once", "exactly_once")


def deliveries(opt):
    return list(DELIVERIES) if opt == "both" else [opt]


class Relay:
    def __init__(self, bench, slot, publication, topic_prefix, name, extra_cmd=None, delivery="at_least_once"):
        self.b, self.slot, self.delivery = bench, slot, delivery
        kafka_extra = ""
        if delivery == "exactly_once":
            # The interface's defaults (transaction_max_events 10000, _bytes 8 MiB, _ms 100; transactional_id
            # outbox-relay.<database>.<slot>, unique per slot and so per run), a progress topic per run, and what
            # --eos-option overrides.
            kafka_extra = f'delivery = "exactly_once"\nprogress_topic = "bench{bench.run_id}.progress"\n'
            for kv in bench.a.eos_option:
                k, v = kv.split("=", 1)
                kafka_extra += f"{k} = {v}\n"
        self.port = free_port()
        self.cfg = os.path.join(bench.work, f"relay-{name}.toml")
        self.log = os.path.join(bench.work, f"relay-{name}.log")
        with open(self.cfg, "w") as f:
            f.write(f"""[log]
level = "info"
[source]
conninfo = "{bench.pgurl}"
slot = "{slot}"
publication = "{publication}"
create_slot = true
create_publication = false
lag_poll_interval_ms = 1000
[kafka]
bootstrap_servers = "{bench.bootstrap}"
{kafka_extra}[[outbox]]
table = "public.{bench.table}"
topic = "{topic_prefix}outbox.event.{{aggregatetype}}"
[outbox.headers]
eventType = "type"
[metrics]
listen = "127.0.0.1:{self.port}"
""")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen((extra_cmd or []) + [bench.relay_bin, "--config", self.cfg],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        bench.contenders.append(self)

    def published(self):
        try:
            return metric_sum(scrape(self.port), "outbox_relay_events_published_total")
        except OSError:
            return 0.0

    def transactions(self):
        """(committed, aborted) Kafka transactions so far (exactly-once mode)."""
        try:
            text = scrape(self.port)
        except OSError:
            return None, None
        name = "outbox_relay_kafka_transactions_total"
        return (int(metric_labeled(text, name, 'outcome="committed"')),
                int(metric_labeled(text, name, 'outcome="aborted"')))

    def wait_visible(self, n, topic, timeout, poll=0.02):
        """Until n events were published and, in exactly-once mode, no Kafka transaction is open on the topic any
        more (last stable offset = high watermark on every partition), i.e. the last one committed: the time the
        events became visible to read_committed consumers. At-least-once: wait_count."""
        done = self.wait_count(n, timeout)
        if self.delivery != "exactly_once":
            return done
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = kafka_consumer_ends(self.b.bootstrap, topic)
            if ends["read_committed"] == ends["read_uncommitted"]:
                return time.monotonic()  # at the latest (the answer takes ~60 ms): never flatters the mode
            if self.proc.poll() is not None:
                raise BenchError(f"relay exited with {self.proc.returncode}: see {self.log}")
            time.sleep(poll)
        raise BenchError(f"a Kafka transaction on {topic} stayed open for {timeout}s: see {self.log}")

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"relay exited with {self.proc.returncode}: see {self.log}")
            if self.ready():
                return
            time.sleep(0.1)
        raise BenchError(f"relay not ready within {timeout}s: see {self.log}")

    def wait_count(self, n, timeout, poll=0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.published() >= n:
                return time.monotonic()
            if self.proc.poll() is not None:
                raise BenchError(f"relay exited with {self.proc.returncode}: see {self.log}")
            time.sleep(poll)
        raise BenchError(f"relay published {self.published():.0f} of {n} within {timeout}s: see {self.log}")

    def usage(self):
        return proc_cpu_seconds(self.pid), proc_status_kb(self.pid, "VmHWM")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Debezium:
    def __init__(self, bench, slot, publication, topic_prefix, name, expect=0):
        self.b, self.slot, self.acked, self.done_at, self.failed = bench, slot, 0, None, None
        self.expect = expect
        self.log = os.path.join(bench.work, f"debezium-{name}.log")
        offsets = os.path.join(bench.work, f"debezium-{name}.offsets")  # a fresh start per phase: the slot was advanced
        pg_port = re.search(r":(\d+)/", bench.pgurl).group(1)
        cmd = ["java", "-cp", bench.debezium_cp, "dev.outboxrelay.bench.DebeziumContender", "debezium",
               f"bootstrap={bench.bootstrap}", f"pg_port={pg_port}", f"slot={slot}", f"publication={publication}",
               f"offsets_file={offsets}", f"topic_prefix={topic_prefix}", f"expect={expect}",
               f"dbz.table.include.list=public.{bench.table}"]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True)
        self.pid = self.proc.pid
        bench.contenders.append(self)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split(None, 1)
            if not parts:
                continue
            if parts[0] == "ACKED":
                self.acked = max(self.acked, int(parts[1]))
            elif parts[0] == "DONE":
                self.done_at = time.monotonic()
                self.acked = max(self.acked, int(parts[1]))
            elif parts[0] == "FAILED":
                self.failed = line.strip()

    def published(self):
        return self.acked

    def wait_count(self, n, timeout, poll=0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if n == self.expect and self.done_at is not None:
                return self.done_at
            if self.acked >= n:
                return time.monotonic()
            if self.proc.poll() is not None or self.failed:
                raise BenchError(f"Debezium stopped ({self.failed or self.proc.returncode}): see {self.log}")
            time.sleep(poll)
        raise BenchError(f"Debezium acknowledged {self.acked} of {n} within {timeout}s: see {self.log}")

    def usage(self):
        return proc_cpu_seconds(self.pid), proc_status_kb(self.pid, "VmHWM")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ---------------------------------------------------------------------------------------------------------------
# The benchmark


PAYLOAD_NOTE = "n" * 150  # makes the jsonb payload text about 300 bytes
# The relay's name in the results (at-least-once keeps the name it had before the modes) and its slot's.
RELAY_NAMES = {"at_least_once": "relay", "exactly_once": "relay_exactly_once"}
SLOT_NAMES = {"at_least_once": "relay", "exactly_once": "eos"}


class Bench:
    def __init__(self, a):
        self.a = a
        self.pgurl = os.environ["PGURL"]
        self.bootstrap = os.environ["KAFKA_BOOTSTRAP"]
        self.pg = Pg(self.pgurl)
        self.relay_bin = os.path.join(a.bin_dir, "outbox-relay")
        self.sink_bin = os.path.join(a.bin_dir, "outbox-sink")
        self.debezium_cp = a.debezium_cp
        self.run_id = f"{int(time.time())}{os.getpid() % 1000:03d}"
        self.table = f"bench_outbox_{self.run_id}"
        self.pub = f"bench_pub_{self.run_id}"          # FOR TABLE ... WITH (publish = 'insert'), as the relay's
        self.pub_dbz = f"bench_dbz_{self.run_id}"      # FOR TABLE ..., as Debezium's publication.autocreate filtered
        self.relay_prefix = f"bench{self.run_id}.relay."
        self.eos_prefix = f"bench{self.run_id}.eos."      # the relay in exactly-once mode
        self.dbz_prefix = f"bench{self.run_id}.dbz."
        self.slots = []
        self.work = tempfile.mkdtemp(prefix=f"outbox-bench-{self.run_id}-")
        self.results = {"phases": {}}
        self.checks = []  # (name, passed, detail)
        self.sink_dbs = []
        self.contenders = []  # every relay and Debezium started: cleanup stops those still running

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def check(self, name, ok, detail=""):
        self.checks.append((name, bool(ok), detail))
        log(f"{'PASS' if ok else 'FAIL'} {name} {detail}")

    def prefix_of(self, mode):
        return self.eos_prefix if mode == "exactly_once" else self.relay_prefix

    def slot_of(self, name):
        """The contender's slot, created now if the backlog phase did not run."""
        for slot in self.slots:
            if slot.startswith(f"bench_{name}_"):
                return slot
        return self.slot(name)

    def slot(self, name):
        slot = f"bench_{name}_{self.run_id}"
        self.pg.sql(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
        self.slots.append(slot)
        return slot

    def setup(self):
        self.pg.file(os.path.join(self.a.repo, "schema/outbox.sql"))
        self.pg.sql(f"CREATE TABLE public.{self.table} (LIKE public.outbox INCLUDING ALL)")
        self.pg.sql(f"CREATE PUBLICATION {self.pub} FOR TABLE public.{self.table} WITH (publish = 'insert')")
        self.pg.sql(f"CREATE PUBLICATION {self.pub_dbz} FOR TABLE public.{self.table}")
        if self.a.create_topics:
            topics = [f"{self.relay_prefix}outbox.event.order"]
            if "exactly_once" in deliveries(self.a.delivery) + deliveries(self.a.live_delivery):
                topics.append(f"{self.eos_prefix}outbox.event.order")
            if self.a.with_debezium:
                topics.append(f"{self.dbz_prefix}outbox.event.order")
            r = subprocess.run(["java", "-cp", self.debezium_cp, "dev.outboxrelay.bench.DebeziumContender", "topics",
                                self.bootstrap] + topics, capture_output=True, text=True)
            if r.returncode != 0:
                raise BenchError(f"creating topics failed: {r.stderr[-2000:]}")

    def cleanup(self):
        for c in self.contenders:
            try:
                c.stop()
            except Exception as e:
                log(f"stopping a contender: {e}")
        for slot in self.slots:
            try:
                self.pg.sql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
                            f"WHERE slot_name = '{slot}' AND NOT active")
            except Exception as e:
                log(f"dropping slot {slot}: {e}")
        for db in self.sink_dbs:
            try:
                self.pg.sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            except Exception as e:
                log(f"dropping database {db}: {e}")
        try:
            self.pg.sql(f"DROP PUBLICATION IF EXISTS {self.pub}; DROP PUBLICATION IF EXISTS {self.pub_dbz}; "
                        f"DROP TABLE IF EXISTS public.{self.table}")
        except Exception as e:
            log(f"cleanup: {e}")
        if not self.a.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- writers ----------------------------------------------------------------------------------------------
    def insert_sql(self, aggregatetype="order"):
        return (f"INSERT INTO public.{self.table} (aggregatetype, aggregateid, type, payload) VALUES ("
                f"'{aggregatetype}', 'order-' || :agg, 'OrderCreated', jsonb_build_object("
                f"'ts', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, "
                f"'orderId', gen_random_uuid()::text, 'customerId', 'c-' || :agg, 'total', 42.50, "
                f"'currency', 'EUR', 'channel', 'web', 'note', '{PAYLOAD_NOTE}'));\n")

    def pgbench(self, clients, seconds=None, transactions=None, rate=None):
        script = os.path.join(self.work, "insert.sql")
        with open(script, "w") as f:
            f.write("\\set agg random(1, 10000)\n" + self.insert_sql())
        cmd = ["pgbench", "-n", "-f", script, "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1))]
        if transactions:
            cmd += ["-t", str(transactions)]
        if seconds:
            cmd += ["-T", str(seconds)]
        if rate:
            cmd += ["-R", str(rate)]
        cmd.append(self.pgurl)
        # synchronous_commit=on for the writers (the dev stack defaults to off): with it off, a commit returns
        # before its WAL is flushed, and walsenders send only flushed WAL, so every contender would wait for the
        # WAL writer (wal_writer_delay, 200 ms) and the latency would measure that instead. fsync stays off.
        env = dict(os.environ, PGOPTIONS="-c synchronous_commit=on")
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.monotonic() - t0
        if r.returncode != 0:
            raise BenchError(f"pgbench failed: {r.stderr.strip()[-1000:]}")
        done = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
        if failed and int(failed.group(1)):
            raise BenchError(f"pgbench: {failed.group(1)} failed transactions")
        return int(done.group(1)), wall

    def count_rows(self):
        return int(self.pg.sql(f"SELECT count(*) FROM public.{self.table}"))

    # -- 1. backlog drain --------------------------------------------------------------------------------------
    def phase_backlog(self):
        n = self.a.events
        clients = self.a.clients
        slots = {"pg_recvlogical": self.slot("recvlogical")}
        modes = deliveries(self.a.delivery)
        for mode in modes:
            slots[RELAY_NAMES[mode]] = self.slot(SLOT_NAMES[mode])
        if self.a.with_debezium:
            slots["debezium"] = self.slot("debezium")
        if self.a.profile:
            slots["profile"] = self.slot("profile")
        log(f"backlog: writing {n} one-row transactions with pgbench ({clients} clients)")
        written, wall = self.pgbench(clients, transactions=n // clients)
        end_lsn = self.pg.lsn()
        rows = self.count_rows()
        self.check("backlog: every pgbench transaction wrote one row", rows == n and written == n,
                   f"{rows} rows, {written} transactions, {n} wanted")
        res = {"events": n, "write_seconds": round(wall, 2), "write_rate": round(n / wall),
               "end_lsn": end_lsn, "contenders": {}}
        self.results["phases"]["backlog"] = res

        # pg_recvlogical: the decoding limit. It exits once it has passed end_lsn.
        log("backlog: pg_recvlogical (pgoutput, proto_version=1) to --endpos")
        t0 = time.monotonic()
        p = subprocess.Popen(["pg_recvlogical", "-d", self.pgurl, "--slot", slots["pg_recvlogical"], "--start",
                              "-o", "proto_version=1", "-o", f"publication_names={self.pub}", "-f", "/dev/null",
                              "--endpos", end_lsn, "--no-loop"], stderr=subprocess.PIPE, text=True)
        ws = self.walsender_sampler(slots["pg_recvlogical"], p)
        _, status, ru = os.wait4(p.pid, 0)
        secs = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read()
        wcpu, _ = ws.stop() if ws else (None, None)
        self.check("backlog: pg_recvlogical reached the end position", p.returncode == 0, err.strip()[-300:])
        res["contenders"]["pg_recvlogical"] = {
            "seconds": round(secs, 2), "events_per_s": round(n / secs), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1), "walsender_cpu_s": wcpu,
            "context_switches": ru.ru_nvcsw + ru.ru_nivcsw}

        # The relay, in each delivery mode, each from its own slot.
        for mode in modes:
            name = RELAY_NAMES[mode]
            eos = mode == "exactly_once"
            log(f"backlog: outbox-relay ({mode})")
            topic = f"{self.prefix_of(mode)}outbox.event.order"
            relay = Relay(self, slots[name], self.pub, self.prefix_of(mode), f"backlog-{mode}", delivery=mode)
            ws = self.walsender_sampler(slots[name], relay.proc)
            # At-least-once: the last delivery report. Exactly-once: the last Kafka transaction committed.
            done = relay.wait_visible(n, topic, timeout=self.a.timeout)
            secs = done - relay.t0
            cpu, hwm = relay.usage()
            csw = proc_context_switches(relay.pid)
            wcpu, _ = ws.stop() if ws else (None, None)
            published = relay.published()
            committed, aborted = relay.transactions() if eos else (None, None)
            relay.stop()
            c = {"delivery": mode, "seconds": round(secs, 2), "events_per_s": round(n / secs),
                 "cpu_s": round(cpu, 2), "peak_rss_mb": round(hwm / 1024, 1), "walsender_cpu_s": wcpu,
                 "context_switches": csw}
            self.check(f"backlog: relay ({mode}) published every event", published == n, f"{published:.0f} of {n}")
            if eos:
                # End offsets count the transaction markers too: count what a read_committed consumer reads.
                in_kafka = kafka_committed_count(self.bootstrap, topic)
                self.check(f"backlog: every event is in Kafka, once (read_committed count, {mode})", in_kafka == n,
                           f"{in_kafka} of {n}")
                self.check(f"backlog: no Kafka transaction aborted ({mode})", aborted == 0, f"{aborted} aborted")
                c.update({"kafka_records": in_kafka, "kafka_transactions_committed": committed,
                          "kafka_transactions_aborted": aborted,
                          "events_per_transaction": round(n / committed) if committed else None,
                          "options": self.a.eos_option})
            else:
                in_kafka = kafka_count(self.bootstrap, topic)
                self.check("backlog: every event is in Kafka (end offsets)", in_kafka == n, f"{in_kafka} of {n}")
                c["kafka_records"] = in_kafka
            res["contenders"][name] = c
            log(f"backlog: relay ({mode}): {json.dumps(c)}")

        if self.a.with_debezium:
            log("backlog: Debezium 3.6.1.Final embedded engine + EventRouter")
            dbz = Debezium(self, slots["debezium"], self.pub_dbz, self.dbz_prefix, "backlog", expect=n)
            ws = self.walsender_sampler(slots["debezium"], dbz.proc, timeout=120)
            done = dbz.wait_count(n, timeout=self.a.timeout * 4)
            secs = done - dbz.t0
            cpu, hwm = dbz.usage()
            csw = proc_context_switches(dbz.pid)
            wcpu, _ = ws.stop() if ws else (None, None)
            dbz.stop()
            in_kafka = kafka_count(self.bootstrap, f"{self.dbz_prefix}outbox.event.order")
            self.check("backlog: Debezium acknowledged every event", dbz.acked >= n, f"{dbz.acked} of {n}")
            self.check("backlog: every Debezium event is in Kafka (end offsets)", in_kafka == n, f"{in_kafka} of {n}")
            res["contenders"]["debezium"] = {"seconds": round(secs, 2), "events_per_s": round(n / secs),
                                             "cpu_s": round(cpu, 2), "peak_rss_mb": round(hwm / 1024, 1),
                                             "walsender_cpu_s": wcpu, "kafka_records": in_kafka,
                                             "context_switches": csw,
                                             "jvm": "default heap (java -cp ...), no tuning"}
        c = res["contenders"]
        if "relay" in c and "pg_recvlogical" in c:
            res["relay_vs_pg_recvlogical"] = round(c["relay"]["events_per_s"] / c["pg_recvlogical"]["events_per_s"], 3)
        if "relay" in c and "debezium" in c:
            res["relay_vs_debezium"] = round(c["relay"]["events_per_s"] / c["debezium"]["events_per_s"], 2)
        if "relay" in c and "relay_exactly_once" in c:
            res["exactly_once_vs_at_least_once"] = round(
                c["relay_exactly_once"]["events_per_s"] / c["relay"]["events_per_s"], 3)
            log(f"backlog: exactly_once / at_least_once drain rate: {res['exactly_once_vs_at_least_once']}×")
        if self.a.profile:
            self.profile_drain(slots["profile"], n)

    def walsender_sampler(self, slot, proc, timeout=30):
        def running():  # without reaping the child: pg_recvlogical's rusage comes from wait4
            try:
                return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
            except ChildProcessError:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and running():
            pid = self.pg.slot_pid(slot)
            if pid:
                return Sampler(pid)
            time.sleep(0.02)
        return None

    def profile_drain(self, slot, n):
        """The relay drains the same backlog once more, on its own slot, under perf (cpu-clock sampling)."""
        perf = shutil.which("perf")
        res = {}
        self.results["profile"] = res
        if not perf:
            res["error"] = "perf not installed"
            return
        mode = self.a.profile_delivery
        res["delivery"] = mode
        log(f"profile: relay drain ({mode}) under perf record -e cpu-clock")
        relay = Relay(self, slot, self.pub, f"bench{self.run_id}.profile.", "profile", delivery=mode)
        data = os.path.join(self.work, "perf.data")
        deadline = time.monotonic() + 30
        wpid = None
        while time.monotonic() < deadline and not wpid:
            wpid = self.pg.slot_pid(slot)
            time.sleep(0.01)
        pids = f"{relay.pid},{wpid}" if wpid else str(relay.pid)
        pr = subprocess.Popen([perf, "record", "-e", "cpu-clock", "-F", "499", "-g", "-o", data, "-p", pids],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        relay.wait_visible(n, f"bench{self.run_id}.profile.outbox.event.order", timeout=self.a.timeout)
        res["seconds"] = round(time.monotonic() - t0, 2)
        if mode == "exactly_once":
            committed, aborted = relay.transactions()
            res["kafka_transactions_committed"], res["kafka_transactions_aborted"] = committed, aborted
        pr.send_signal(signal.SIGINT)
        pr.wait(60)
        relay.stop()
        r = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children", "--sort", "comm,dso,symbol",
                            "-g", "none", "--percent-limit", "0.7"], capture_output=True, text=True)
        rows = []
        for line in r.stdout.splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[.\]\s+(.*)", line)
            if m:
                rows.append({"percent": float(m.group(1)), "comm": m.group(2), "dso": m.group(3),
                             "symbol": re.sub(r"(\s+-)+\s*$", "", m.group(4)).strip()})
        res["hottest"] = rows[:40]
        r = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children", "--comm", "outbox-relay",
                            "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.3"],
                           capture_output=True, text=True)
        rows = []
        for line in r.stdout.splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
            if m:
                rows.append({"percent": float(m.group(1)), "dso": m.group(2),
                             "symbol": re.sub(r"(\s+-)+\s*$", "", m.group(3)).strip()})
        res["relay_main_thread"] = rows[:25]
        by_comm = {}
        for line in subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children", "--sort", "comm",
                                    "-g", "none"], capture_output=True, text=True).stdout.splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(\S+)", line)
            if m:
                by_comm[m.group(2)] = float(m.group(1))
        res["by_process"] = by_comm
        res["note"] = (f"perf record -e cpu-clock -F 499 -g -p <relay>,<walsender>: hardware counters are not "
                       f"available on this machine; percentages are of samples in both processes")
        shutil.copy(data, os.path.join(self.a.out_dir, "perf-relay-drain.data")) if self.a.keep_perf else None

    def phase_callgrind(self):
        """Instructions, which the machine's load does not change: the relay drains a small backlog under callgrind."""
        n = self.a.callgrind_events
        res = {"events": n}
        self.results["callgrind"] = res
        if not shutil.which("valgrind"):
            res["error"] = "valgrind not installed"
            return
        slot = self.slot("callgrind")
        self.pgbench(self.a.clients, transactions=n // self.a.clients)
        out = os.path.join(self.work, "callgrind.out")
        log(f"callgrind: relay drains {n} events under valgrind --tool=callgrind")
        relay = Relay(self, slot, self.pub, f"bench{self.run_id}.callgrind.", "callgrind",
                      extra_cmd=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
        try:
            relay.wait_count(n, timeout=self.a.timeout * 2, poll=0.5)
        finally:
            relay.stop()
        r = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True)
        total, rows = None, []
        for line in r.stdout.splitlines():
            m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
            if not m:
                continue
            ir = int(m.group(1).replace(",", ""))
            if "PROGRAM TOTALS" in m.group(3):
                total = ir
                continue
            fn = re.sub(r"^\S*?:(?=[^/])", "", m.group(3).split(" [")[0], count=1)
            dso = m.group(3).rsplit("[", 1)[-1].rstrip("]") if "[" in m.group(3) else ""
            rows.append({"percent": float(m.group(2)), "instructions_per_event": round(ir / n),
                         "function": fn[:160], "dso": os.path.basename(dso)})
        res["instructions_total"] = total
        res["instructions_per_event"] = round(total / n) if total else None
        res["hottest"] = rows[:15]
        res["note"] = ("valgrind --tool=callgrind on the relay (all threads), start-up included; perf's "
                       "hardware counters are not available here")

    # -- 2. live latency --------------------------------------------------------------------------------------
    def phase_live(self):
        if self.a.create_topics:
            stamp = ("the topics are created with message.timestamp.type=LogAppendTime, so a record's timestamp is "
                     "the broker's append time, which with acks=all on one broker is when the write is acknowledged")
        else:
            stamp = ("the topics are auto-created (CreateTime: the producer's send time), so this measures commit "
                     "to hand-over to Kafka, not to its acknowledgement (--quick without --with-debezium)")
        res = {"method": ("each payload carries ts = clock_timestamp() at INSERT (microseconds); " + stamp +
                          "; latency = record timestamp - ts, read back with kcat after each step (Kafka "
                          "timestamps are whole milliseconds, so a latency is under-read by up to 1 ms). "
                          "Replication lag = pg_current_wal_insert_lsn() - the slot's confirmed_flush_lsn, "
                          "sampled every 0.5 s with SQL for every contender."),
               "visible_method": ("Visible: a read_committed consumer (isolation.level=read_committed set "
                                  "explicitly, librdkafka's default too; one kcat per partition, started at the "
                                  "step's start offsets) stamps each record with the wall clock when it arrives; "
                                  "latency = arrival - ts. In exactly-once mode records become visible only when "
                                  "their Kafka transaction commits, so this is the latency to compare between the "
                                  "modes; append latency is the broker's LogAppendTime, before the commit."),
               "writers": "pgbench, one INSERT per transaction, synchronous_commit=on (fsync off, as in the dev stack)",
               "steps_seconds": self.a.live_seconds, "contenders": {}}
        self.results["phases"]["live"] = res
        contenders = [(RELAY_NAMES[m], self.prefix_of(m), m) for m in deliveries(self.a.live_delivery)]
        if self.a.with_debezium:
            contenders.append(("debezium", self.dbz_prefix, None))
        for name, prefix, mode in contenders:
            slot = self.slot_of("debezium" if mode is None else SLOT_NAMES[mode])
            self.pg.advance_slot(slot)
            topic = f"{prefix}outbox.event.order"
            if mode is not None:
                c = Relay(self, slot, self.pub, prefix, f"live-{mode}", delivery=mode)
                c.wait_ready()
                arrived = c.wait_visible  # exactly-once: until the last Kafka transaction committed
            else:
                c = Debezium(self, slot, self.pub_dbz, prefix, "live")
                arrived = lambda n, topic, timeout: c.wait_count(n, timeout)  # noqa: E731
            steps = {}
            res["contenders"][name] = steps
            try:
                # Warm-up: wait until a first event made it through, so start-up is not counted as latency.
                base = c.published()
                self.pgbench(1, transactions=10)
                arrived(base + 10, topic, timeout=180)
                for label, rate, clients in self.a.live_steps:
                    hist0 = histogram_buckets(scrape(c.port), "outbox_relay_commit_to_ack_seconds") \
                        if mode is not None else None
                    tx0 = c.transactions() if mode == "exactly_once" else None
                    before = c.published()
                    start = kafka_end_offsets(self.bootstrap, topic)
                    visible = VisibleConsumer(self.bootstrap, topic, start)
                    cpu0 = proc_cpu_seconds(c.pid)
                    lag = LagSampler(self.pg, slot)
                    log(f"live: {name} at {label} events/s for {self.a.live_seconds}s")
                    try:
                        written, wall = self.pgbench(clients, seconds=self.a.live_seconds, rate=rate)
                        arrived(before + written, topic, timeout=max(120, self.a.timeout))
                        visible.wait_count(written, timeout=60)
                    finally:
                        vis = visible.stop()
                    time.sleep(1.5)  # one more confirmation round, so the lag sampler sees the slot catch up
                    max_lag = lag.stop()
                    cpu1 = proc_cpu_seconds(c.pid)
                    end = kafka_end_offsets(self.bootstrap, topic)
                    lat = kafka_latencies_ms(self.bootstrap, topic, start, end)
                    s = lat_summary(lat)
                    s.update({"visible_" + k: v for k, v in lat_summary(vis).items()})
                    s.update({"delivery": mode, "target_rate": rate, "achieved_rate": round(written / wall),
                              "events": written, "max_replication_lag_bytes": max_lag,
                              "cpu_s": round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None})
                    if hist0 is not None:
                        hist1 = histogram_buckets(scrape(c.port), "outbox_relay_commit_to_ack_seconds")
                        for q in (0.5, 0.99):
                            v = histogram_quantile(hist0, hist1, q)
                            s[f"relay_histogram_p{int(q * 100)}_ms"] = round(v * 1000, 2) if v is not None else None
                    if tx0 is not None:
                        tx1 = c.transactions()
                        s["kafka_transactions_committed"] = tx1[0] - tx0[0]
                        s["kafka_transactions_aborted"] = tx1[1] - tx0[1]
                        s["kafka_transactions_per_s"] = round((tx1[0] - tx0[0]) / wall, 1)
                        s["events_per_transaction"] = round(written / (tx1[0] - tx0[0]), 1) if tx1[0] > tx0[0] else None
                    steps[label] = s
                    self.check(f"live: {name} at {label}: every event arrived with a latency",
                               s["count"] == written, f"{s['count']} of {written}")
                    self.check(f"live: {name} at {label}: every event seen by the read_committed consumer",
                               s["visible_count"] == written, f"{s['visible_count']} of {written}")
                    log(f"live: {name} {label}: {json.dumps(s)}")
                cpu, hwm = c.usage()
                steps["peak_rss_mb"] = round(hwm / 1024, 1)
            finally:
                c.stop()

    # -- 3. one large transaction -----------------------------------------------------------------------------
    def phase_large(self):
        n = self.a.large_rows
        slot = self.slot_of("relay")
        self.pg.advance_slot(slot)
        relay = Relay(self, slot, self.pub, self.relay_prefix, "large")
        try:
            relay.wait_ready()
            base = relay.published()
            rss_idle = proc_status_kb(relay.pid, "VmRSS")
            log(f"large: one transaction of {n} rows")
            t0 = time.monotonic()
            self.pg.sql(f"INSERT INTO public.{self.table} (aggregatetype, aggregateid, type, payload) "
                        f"SELECT 'order', 'order-' || (g % 10000), 'OrderCreated', jsonb_build_object("
                        f"'ts', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, "
                        f"'orderId', gen_random_uuid()::text, 'customerId', 'c-' || (g % 10000), 'total', 42.50, "
                        f"'currency', 'EUR', 'channel', 'web', 'note', '{PAYLOAD_NOTE}') "
                        f"FROM generate_series(1, {n}) g")
            committed = time.monotonic()
            done = relay.wait_count(base + n, timeout=self.a.timeout * 2)
            cpu, hwm = relay.usage()
            published = relay.published() - base
        finally:
            relay.stop()
        self.check("large: the relay published every row of the transaction", published == n, f"{published:.0f} of {n}")
        self.results["phases"]["large_transaction"] = {
            "rows": n, "insert_seconds": round(committed - t0, 2), "commit_to_last_ack_seconds": round(done - committed, 2),
            "events_per_s_after_commit": round(n / (done - committed)), "relay_cpu_s": round(cpu, 2),
            "relay_peak_rss_mb": round(hwm / 1024, 1), "relay_rss_before_mb": round((rss_idle or 0) / 1024, 1)}

    # -- 4. sink ----------------------------------------------------------------------------------------------
    def sink_available(self):
        example = os.path.join(self.a.repo, "examples/sink.toml")
        model = os.path.join(self.a.repo, "schema/read_model.sql")
        if not (os.access(self.sink_bin, os.X_OK) and os.path.exists(example) and os.path.exists(model)):
            return None, "sink not available (binary, examples/sink.toml or schema/read_model.sql missing)"
        r = subprocess.run([self.sink_bin, "--check-config", example], capture_output=True, text=True,
                           env=dict(os.environ))
        if r.returncode != 0:
            return None, f"sink not available: --check-config examples/sink.toml exited {r.returncode}"
        return example, None

    def phase_sink(self):
        m = self.a.sink_events
        res = {"events": m}
        self.results["phases"]["sink"] = res
        example, why = self.sink_available()
        if not example:
            res["not_measured"] = why
            log(f"sink: not measured: {why}")
            return
        # The events: the order-placing type of the example ({orderId, customerId, total}: the projections that
        # insert into customer_order_history and bump customer_order_counts), published by the relay to a topic of
        # their own.
        with open(example) as f:
            text = f.read()
        etype = "OrderPlaced" if '"OrderPlaced"' in text else "OrderCreated"
        res["event_type"] = etype
        slot = self.slot_of("relay")
        self.pg.advance_slot(slot)
        relay = Relay(self, slot, self.pub, self.relay_prefix, "sink-input")
        try:
            relay.wait_ready()
            base = relay.published()
            self.pg.sql(f"INSERT INTO public.{self.table} (aggregatetype, aggregateid, type, payload) "
                        f"SELECT 'sinkorder', 'c-{self.run_id}-' || (g % 10000), '{etype}', jsonb_build_object("
                        f"'orderId', 'o-{self.run_id}-' || g, 'customerId', 'c-{self.run_id}-' || (g % 10000), "
                        f"'total', 42.50, 'note', '{PAYLOAD_NOTE}') FROM generate_series(1, {m}) g")
            relay.wait_count(base + m, timeout=self.a.timeout)
        finally:
            relay.stop()
        topic = f"{self.relay_prefix}outbox.event.sinkorder"
        res["sink"] = self.run_sink(example, topic, m, "sink", dedup=None)
        if res["sink"] is None:
            res["not_measured"] = "the sink did not project every event in time"
            return
        if self.a.sink_variants:
            res["sink_no_dedup"] = self.run_sink(example, topic, m, "nodedup", dedup=False)
        # The limit: the same rows, written by plain batched SQL (500 events per transaction, one multi-row INSERT
        # for the history and one aggregated upsert for the counters), streamed through one psql.
        res["raw_insert"] = self.raw_insert(m)
        res["sink_vs_raw"] = round(res["sink"]["events_per_s"] / res["raw_insert"]["events_per_s"], 3)

    def read_model_db(self, label):
        """A database of its own for each read model, dropped at the end, so the run leaves nothing behind."""
        db = f"bench_{self.run_id}_{label}"
        self.pg.sql(f"CREATE DATABASE {db}")
        self.sink_dbs.append(db)
        pg = Pg(self.pgurl.rsplit("/", 1)[0] + "/" + db)
        pg.file(os.path.join(self.a.repo, "schema/read_model.sql"))
        return pg

    def run_sink(self, example, topic, m, label, dedup):
        pg = self.read_model_db(label)
        # The demo's sink configuration, pointed at that topic; everything else as examples/sink.toml has it.
        port = free_port()
        with open(example) as f:
            cfg = f.read()
        cfg = re.sub(r'(?m)^topics = .*$', f'topics = ["{topic}"]', cfg)
        cfg = re.sub(r'(?m)^group_id = .*$', f'group_id = "bench-{self.run_id}-{label}"', cfg)
        cfg = re.sub(r'(?m)^listen = .*$', f'listen = "127.0.0.1:{port}"', cfg)
        cfg = cfg.replace('"outbox.event.order"', f'"{topic}"')
        cfg = cfg.replace('conninfo = "${PGURL}"', f'conninfo = "{pg.url}"')
        if dedup is not None:
            cfg = re.sub(r'(?m)^(\[deduplication\]\s*\nenabled = )\w+', lambda mm: mm.group(1) + str(dedup).lower(), cfg)
        batch = re.search(r'(?m)^max_events = (\d+)', cfg)
        dd = re.search(r'(?m)^\[deduplication\]\s*\nenabled = (\w+)', cfg)
        desc = (f"examples/sink.toml: batch.max_events {batch.group(1) if batch else '?'}, deduplication "
                f"{dd.group(1) if dd else '?'}; 2 projections per event")
        cfg_path = os.path.join(self.work, f"sink-{label}.toml")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        log(f"sink: outbox-sink projects {m} events ({desc})")
        sink_log = os.path.join(self.work, f"sink-{label}.log")
        t0 = time.monotonic()
        sp = subprocess.Popen([self.sink_bin, "--config", cfg_path], stdout=open(sink_log, "w"), stderr=subprocess.STDOUT)
        done = None
        try:
            deadline = t0 + self.a.timeout * 2
            while time.monotonic() < deadline:
                if sp.poll() is not None:
                    raise BenchError(f"outbox-sink exited with {sp.returncode}: see {sink_log}")
                # The sink stores its offsets in the same transaction as the read-model rows: when they add up to
                # m, every event is applied and committed.
                try:
                    applied = int(pg.sql(f"SELECT coalesce(sum(next_offset), 0) FROM public.outbox_sink_offsets "
                                         f"WHERE consumer_group = 'bench-{self.run_id}-{label}'") or 0)
                except BenchError:
                    applied = 0  # the sink has not created its tables yet
                if applied >= m:
                    done = time.monotonic()
                    break
                time.sleep(0.25)
            cpu, hwm = proc_cpu_seconds(sp.pid), proc_status_kb(sp.pid, "VmHWM")
        finally:
            sp.send_signal(signal.SIGTERM)
            try:
                sp.wait(60)
            except subprocess.TimeoutExpired:
                sp.kill()
        history = int(pg.sql("SELECT count(*) FROM public.customer_order_history"))
        self.check(f"sink ({label}): every event projected into the read model", done is not None and history == m,
                   f"{history} of {m} rows")
        if done is None:
            return None
        secs = done - t0
        return {"seconds": round(secs, 2), "events_per_s": round(m / secs), "cpu_s": round(cpu or 0, 2),
                "peak_rss_mb": round((hwm or 0) / 1024, 1), "config": desc}

    def raw_insert(self, m, batch=500):
        pg = self.read_model_db("raw")
        counter = pg.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'customer_order_counts' "
                         "AND column_name IN ('orders_placed', 'orders_created') LIMIT 1") or "orders_placed"
        rid = f"r{self.run_id}"
        path = os.path.join(self.work, "raw.sql")
        with open(path, "w") as f:
            for start in range(1, m + 1, batch):
                rows = [(f"o-{rid}-{g}", f"c-{rid}-{g % 10000}") for g in range(start, min(m, start + batch - 1) + 1)]
                vals = ",".join(f"('{o}','{c}',42.50,'placed','e-{o}','raw')" for o, c in rows)
                f.write("BEGIN;\nINSERT INTO public.customer_order_history "
                        "(order_id, customer_id, total, status, event_id, source) VALUES " + vals +
                        ";\n")
                vals = ",".join(f"('{c}',42.50)" for _, c in rows)
                f.write(f"INSERT INTO public.customer_order_counts (customer_id, {counter}, total_spent) "
                        "SELECT c, count(*), sum(t) FROM (VALUES " + vals + ") v(c, t) GROUP BY c "
                        f"ON CONFLICT (customer_id) DO UPDATE SET {counter} = customer_order_counts.{counter} "
                        f"+ EXCLUDED.{counter}, total_spent = customer_order_counts.total_spent + "
                        "EXCLUDED.total_spent;\nCOMMIT;\n")
        t0 = time.monotonic()
        pg.file(path)
        secs = time.monotonic() - t0
        return {"seconds": round(secs, 2), "events_per_s": round(m / secs), "batch": batch,
                "method": "psql -f: per 500 events one transaction with a multi-row INSERT into "
                          "customer_order_history and one aggregated upsert into customer_order_counts"}


# ---------------------------------------------------------------------------------------------------------------
# Facts and report


def sh(cmd):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()
    except Exception as e:
        return f"unknown ({e})"


def machine_facts(b):
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    return {
        "cores": os.cpu_count(), "cpu": model, "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "postgresql": b.pg.sql("SHOW server_version"),
        "kafka": os.environ.get("KAFKA_VERSION", "3.9.1"),
        "librdkafka": sh("dpkg-query -W -f='${Version}' librdkafka1"),
        "libpq": sh("dpkg-query -W -f='${Version}' libpq5"),
        "relay": sh(f"{b.relay_bin} --version"),
        "source": sh(f"cd {b.a.repo} && git rev-parse --short HEAD") +
        (" + uncommitted changes in relay/ sinks/" if sh(f"cd {b.a.repo} && git status --porcelain relay sinks") else ""),
        "debezium": "3.6.1.Final (debezium-embedded, debezium-connector-postgres; kafka-clients 4.3.0)"
        if b.a.with_debezium else "not run",
        "java": sh("java -version 2>&1 | head -1"),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float):
        v = f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{v}{unit}"


def display(name):
    return {"relay_exactly_once": "relay, exactly_once"}.get(name, name)


def markdown(r):
    out = ["# outbox-relay benchmark", "",
           f"Run {r['started_utc']} with `{r['command']}` ({'quick' if r['quick'] else 'full'} mode).", "",
           "Machine: " + ", ".join(f"{k} {v}" for k, v in r["machine"].items()), "",
           f"Load: {r.get('load_note', '')}", ""]
    ph = r["phases"]
    b = ph.get("backlog")
    if b:
        out += [f"## 1. Backlog drain: {b['events']:,} one-row transactions (~300-byte payload, 10,000 aggregates)", "",
                f"Written with pgbench in {b['write_seconds']} s ({b['write_rate']:,}/s) while no contender ran; "
                "one slot per contender created before the writes; each drains the same WAL in turn.", "",
                "| contender | seconds | events/s | CPU s | CPU µs/event | peak RSS MB | its walsender's CPU s | "
                "context switches/event |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, c in b["contenders"].items():
            out.append(f"| {display(name)} | {fmt(c['seconds'])} | {fmt(c['events_per_s'])} | {fmt(c['cpu_s'])} | "
                       f"{fmt(round(c['cpu_s'] * 1e6 / b['events'], 1))} | "
                       f"{fmt(c['peak_rss_mb'])} | {fmt(c.get('walsender_cpu_s'))} | "
                       f"{fmt(round(c['context_switches'] / b['events'], 3) if c.get('context_switches') else None)} |")
        out.append("")
        if "relay_vs_pg_recvlogical" in b:
            out.append(f"relay / pg_recvlogical: **{b['relay_vs_pg_recvlogical']}×** events/s (target ≥ 0.9×)")
        if "relay_vs_debezium" in b:
            out.append(f"relay / Debezium: **{b['relay_vs_debezium']}×** events/s (target ≥ 5×)")
        if "exactly_once_vs_at_least_once" in b:
            out.append(f"relay exactly_once / at_least_once: **{b['exactly_once_vs_at_least_once']}×** events/s "
                       "(target ≥ 0.8×)")
        e = b["contenders"].get("relay_exactly_once")
        if e:
            out.append("")
            out.append(f"Exactly-once drain: {fmt(e.get('kafka_transactions_committed'))} Kafka transactions "
                       f"committed ({fmt(e.get('events_per_transaction'))} events each on average), "
                       f"{fmt(e.get('kafka_transactions_aborted'))} aborted; its time ends when the last one "
                       "committed (no open transaction left: last stable offset = high watermark on every "
                       "partition), its count is what a read_committed consumer reads"
                       + (f"; options {', '.join(e['options'])}" if e.get("options") else "") + ".")
        out.append("")
    lv = ph.get("live")
    if lv:
        out += ["## 2. Live latency (commit → Kafka acknowledgement; commit → visible to read_committed)", "",
                lv["method"], "", lv.get("visible_method", ""), "",
                "| contender | target/s | achieved/s | events | append p50 ms | append p99 ms | append max ms | "
                "visible p50 ms | visible p99 ms | visible max ms | max lag bytes | CPU s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, steps in lv["contenders"].items():
            for label, s in steps.items():
                if not isinstance(s, dict):
                    continue
                out.append(f"| {display(name)} | {label} | {fmt(s['achieved_rate'])} | {fmt(s['events'])} | "
                           f"{fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {fmt(s['max_ms'])} | "
                           f"{fmt(s.get('visible_p50_ms'))} | {fmt(s.get('visible_p99_ms'))} | "
                           f"{fmt(s.get('visible_max_ms'))} | {fmt(s['max_replication_lag_bytes'])} | "
                           f"{fmt(s['cpu_s'])} |")
        out.append("")
        for name, steps in lv["contenders"].items():
            out.append(f"Peak RSS through the live steps, {display(name)}: {fmt(steps.get('peak_rss_mb'))} MB")
        out.append("")
        for name, what in (("relay", "commit timestamp in PostgreSQL to delivery report"),
                           ("relay_exactly_once", "commit timestamp in PostgreSQL to Kafka transaction committed")):
            rl = lv["contenders"].get(name, {})
            hs = [f"{k}: p50 {fmt(v.get('relay_histogram_p50_ms'))} ms, p99 {fmt(v.get('relay_histogram_p99_ms'))} ms"
                  for k, v in rl.items() if isinstance(v, dict) and "relay_histogram_p50_ms" in v]
            if hs:
                out += [f"Cross-check, {display(name)}'s own outbox_relay_commit_to_ack_seconds histogram ({what}; "
                        "interpolated within buckets): " + "; ".join(hs) + ".", ""]
        rl = lv["contenders"].get("relay_exactly_once", {})
        ts = [f"{k}: {fmt(v.get('kafka_transactions_per_s'))} transactions/s, "
              f"{fmt(v.get('events_per_transaction'))} events each, {fmt(v.get('kafka_transactions_aborted'))} aborted"
              for k, v in rl.items() if isinstance(v, dict) and "kafka_transactions_per_s" in v]
        if ts:
            out += ["Kafka transactions of the exactly-once relay (outbox_relay_kafka_transactions_total): " +
                    "; ".join(ts) + ".", ""]
    lg = ph.get("large_transaction")
    if lg:
        out += [f"## 3. One transaction of {lg['rows']:,} rows", "",
                "| insert s | commit → last ack s | events/s after commit | relay CPU s | relay peak RSS MB |",
                "| ---: | ---: | ---: | ---: | ---: |",
                f"| {fmt(lg['insert_seconds'])} | {fmt(lg['commit_to_last_ack_seconds'])} | "
                f"{fmt(lg['events_per_s_after_commit'])} | {fmt(lg['relay_cpu_s'])} | {fmt(lg['relay_peak_rss_mb'])} |",
                ""]
    sk = ph.get("sink")
    if sk:
        out += [f"## 4. Sink: {sk['events']:,} {sk.get('event_type', 'order')} events into the demo read model", ""]
        if "not_measured" in sk:
            out += ["| what | events/s |", "| --- | ---: |", f"| outbox-sink | not measured: {sk['not_measured']} |",
                    f"| raw batched INSERT | not measured |", ""]
        else:
            out += ["| what | seconds | events/s | CPU s | peak RSS MB |", "| --- | ---: | ---: | ---: | ---: |",
                    f"| outbox-sink ({sk['sink']['config']}) | {fmt(sk['sink']['seconds'])} | "
                    f"{fmt(sk['sink']['events_per_s'])} | {fmt(sk['sink']['cpu_s'])} | {fmt(sk['sink']['peak_rss_mb'])} |"]
            v = sk.get("sink_no_dedup")
            if v:
                out.append(f"| outbox-sink, variant ({v['config']}) | {fmt(v['seconds'])} | {fmt(v['events_per_s'])} | "
                           f"{fmt(v['cpu_s'])} | {fmt(v['peak_rss_mb'])} |")
            out += [
                    f"| raw batched INSERT ({sk['raw_insert']['method']}) | {fmt(sk['raw_insert']['seconds'])} | "
                    f"{fmt(sk['raw_insert']['events_per_s'])} | — | — |", "",
                    f"sink / raw INSERT: **{sk['sink_vs_raw']}×** (target ≥ 0.5×)", ""]
    t = r.get("targets")
    if t:
        out += ["## Targets (reported, not asserted)", "", "| target | measured | met |", "| --- | --- | --- |"]
        for row in t:
            out.append(f"| {row['target']} | {row['measured']} | {row['met']} |")
        out.append("")
    pf = r.get("profile")
    if pf and pf.get("hottest"):
        out += ["## Profile of the relay's drain (with its walsender)", "", pf.get("note", ""), "",
                "By process: " + ", ".join(f"{k} {v}%" for k, v in pf.get("by_process", {}).items()), "",
                "| % | process | dso | symbol |", "| ---: | --- | --- | --- |"]
        for h in pf["hottest"][:20]:
            out.append(f"| {h['percent']} | {h['comm']} | {h['dso']} | `{h['symbol'][:90]}` |")
        out += ["", "The relay's main thread (comm outbox-relay) alone, % of all samples:", "",
                "| % | dso | symbol |", "| ---: | --- | --- |"]
        for h in pf.get("relay_main_thread", [])[:20]:
            out.append(f"| {h['percent']} | {h['dso']} | `{h['symbol'][:90]}` |")
        out.append("")
    if r.get("notes"):
        out += ["## Method notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    cg = r.get("callgrind")
    if cg and cg.get("hottest"):
        out += [f"## Callgrind: the relay draining {cg['events']:,} events", "", cg["note"] + ".", "",
                f"{cg['instructions_per_event']:,} instructions per event in the relay process.", "",
                "| % of instructions | instructions/event | function | dso |", "| ---: | ---: | --- | --- |"]
        for h in cg["hottest"]:
            out.append(f"| {h['percent']} | {h['instructions_per_event']:,} | `{h['function'][:100]}` | {h['dso']} |")
        out.append("")
    out += [f"Checks: {r['checks_passed']} passed, {r['checks_failed']} failed."]
    for c in r["checks"]:
        if not c["passed"]:
            out.append(f"- FAILED {c['name']}: {c['detail']}")
    return "\n".join(out) + "\n"


def targets(r):
    rows = []
    ph = r["phases"]
    b = ph.get("backlog", {})
    if "relay_vs_pg_recvlogical" in b:
        v = b["relay_vs_pg_recvlogical"]
        rows.append({"target": "relay ≥ 0.9× pg_recvlogical (backlog events/s)", "measured": f"{v}×", "met": v >= 0.9})
    if "relay_vs_debezium" in b:
        v = b["relay_vs_debezium"]
        rows.append({"target": "relay ≥ 5× Debezium (backlog events/s)", "measured": f"{v}×", "met": v >= 5})
    rss = []
    if "relay" in b.get("contenders", {}):
        rss.append(b["contenders"]["relay"]["peak_rss_mb"])
    lv = ph.get("live", {}).get("contenders", {}).get("relay", {})
    if lv.get("peak_rss_mb"):
        rss.append(lv["peak_rss_mb"])
    if rss:
        rows.append({"target": "relay peak RSS ≤ 32 MB steady (backlog, live)", "measured": f"{max(rss)} MB",
                     "met": max(rss) <= 32})
    lg = ph.get("large_transaction")
    if lg:
        rows.append({"target": "relay peak RSS ≤ 64 MB through the large transaction",
                     "measured": f"{lg['relay_peak_rss_mb']} MB", "met": lg["relay_peak_rss_mb"] <= 64})
    s5 = lv.get("5000")
    if s5 and s5.get("p99_ms") is not None:
        rows.append({"target": "relay p99 ≤ 10 ms at 5,000 events/s", "measured": f"{s5['p99_ms']:.1f} ms",
                     "met": s5["p99_ms"] <= 10})
    if "exactly_once_vs_at_least_once" in b:
        v = b["exactly_once_vs_at_least_once"]
        rows.append({"target": "relay exactly_once ≥ 0.8× at_least_once (backlog events/s)", "measured": f"{v}×",
                     "met": v >= 0.8})
    e5 = ph.get("live", {}).get("contenders", {}).get("relay_exactly_once", {}).get("5000")
    if e5 and e5.get("visible_p99_ms") is not None:
        rows.append({"target": "relay exactly_once p99 ≤ 25 ms at 5,000 events/s (commit → visible to "
                               "read_committed)", "measured": f"{e5['visible_p99_ms']:.1f} ms",
                     "met": e5["visible_p99_ms"] <= 25})
    sk = ph.get("sink", {})
    if "sink_vs_raw" in sk:
        rows.append({"target": "sink ≥ 0.5× raw batched INSERT", "measured": f"{sk['sink_vs_raw']}×",
                     "met": sk["sink_vs_raw"] >= 0.5})
    elif sk:
        rows.append({"target": "sink ≥ 0.5× raw batched INSERT", "measured": "not measured", "met": "—"})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--with-debezium", action="store_true")
    ap.add_argument("--debezium-cp", default="")
    ap.add_argument("--create-topics", action="store_true")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--large-rows", type=int, default=1_000_000)
    ap.add_argument("--sink-events", type=int, default=200_000)
    ap.add_argument("--sink-variants", action="store_true", help="also run the sink with deduplication off")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--live-seconds", type=int, default=25)
    ap.add_argument("--live-rates", default="1000,5000,max")
    ap.add_argument("--phases", default="backlog,live,large,sink")
    ap.add_argument("--delivery", choices=list(DELIVERIES) + ["both"], default="both",
                    help="the relay's delivery mode(s) in the backlog drain and (unless --live-delivery) live latency")
    ap.add_argument("--live-delivery", choices=list(DELIVERIES) + ["both"], default=None,
                    help="the relay's delivery mode(s) in the live latency phase (default: --delivery)")
    ap.add_argument("--eos-option", action="append", default=[], metavar="KEY=VALUE",
                    help='an extra [kafka] setting of the exactly-once relay, TOML value, e.g. transaction_max_ms=20')
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-delivery", choices=DELIVERIES, default="at_least_once")
    ap.add_argument("--callgrind-events", type=int, default=20000)
    ap.add_argument("--keep-perf", action="store_true")
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--timeout", type=int, default=900, help="seconds a drain may take")
    ap.add_argument("--command", default="bench/run")
    ap.add_argument("--load-note", default="")
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args()
    a.live_delivery = a.live_delivery or a.delivery
    a.live_steps = []
    for r in a.live_rates.split(","):
        a.live_steps.append(("max", None, a.clients) if r == "max" else (r, int(r), a.clients))
    phases = a.phases.split(",")

    b = Bench(a)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    failed_phase = None
    try:
        facts = machine_facts(b)
        b.setup()
        for ph in phases:
            try:
                {"backlog": b.phase_backlog, "live": b.phase_live, "large": b.phase_large,
                 "sink": b.phase_sink, "callgrind": b.phase_callgrind}[ph]()
            except BenchError as e:
                failed_phase = ph
                b.check(f"{ph}: phase completed", False, str(e))
                if ph == "backlog":
                    break
    finally:
        b.cleanup()
    facts["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    r = {"started_utc": started, "command": a.command, "quick": a.quick, "machine": facts,
         "load_note": a.load_note, "config": {k: v for k, v in vars(a).items() if k not in ("live_steps",)},
         "phases": b.results["phases"]}
    for k in ("profile", "callgrind"):
        if k in b.results:
            r[k] = b.results[k]
    r["notes"] = [
        "Each contender has its own replication slot, created before the backlog was written, and drains the same "
        "WAL; they run one after the other, never at the same time. Times start when the process is spawned "
        "(start-up included) and end when the last event is acknowledged: pg_recvlogical's exit at --endpos, the "
        "relay's outbox_relay_events_published_total reaching N (scraped every 50 ms), the N-th acknowledgement "
        "callback of Debezium's KafkaProducer. CPU is utime+stime of the process (pg_recvlogical: wait4 rusage), "
        "peak RSS its VmHWM (wait4 ru_maxrss); the walsender's CPU is sampled from /proc.",
        "outbox-relay: its defaults (acks=all, idempotence, linger.ms=2, 20,000 events / 16 MiB in flight) with "
        "create_publication=false, a topic prefix per run, [outbox.headers] eventType = \"type\" (the sink needs it) "
        "and lag_poll_interval_ms=1000.",
        "Debezium 3.6.1.Final embedded engine (DebeziumEngine, Connect format, bench/debezium): PostgresConnector "
        "with plugin.name=pgoutput, its own slot and a publication FOR TABLE <outbox> created with the slot "
        "(publication.autocreate.mode=filtered finds it), snapshot.mode=no_data, tombstones.on.delete=false, "
        "table.include.list=<outbox>, EventRouter with its defaults; every other setting is Debezium's default "
        "(max.batch.size 2048, max.queue.size 8192, poll.interval.ms 500, offset.flush.interval.ms 60000: the "
        "last two show in its latency and lag). Each batch is sent with a KafkaProducer (acks=all, "
        "enable.idempotence=true, otherwise defaults), waited for, then marked processed. JVM: java -cp with "
        "the default heap (a quarter of RAM), no tuning; its peak RSS includes the JVM.",
        "outbox-relay exactly_once: the same configuration plus delivery = \"exactly_once\" and a progress topic "
        "per run; the interface's defaults otherwise (transaction_max_events 10000, transaction_max_bytes 8 MiB, "
        "transaction_max_ms 100, transactional_id outbox-relay.<database>.<slot>), each from a slot of its own "
        "over the same WAL. Its drain ends when the last Kafka transaction committed (last stable offset = high "
        "watermark on every partition, after outbox_relay_events_published_total reached N).",
        "The machine is shared: compare CPU µs/event and ratios more than absolute rates, and see the load "
        "averages above.",
    ]
    r["targets"] = targets(r)
    r["checks"] = [{"name": n, "passed": p, "detail": d} for n, p, d in b.checks]
    r["checks_passed"] = sum(1 for c in b.checks if c[1])
    r["checks_failed"] = sum(1 for c in b.checks if not c[1])
    md = markdown(r)
    if a.write_results:
        os.makedirs(a.out_dir, exist_ok=True)
        with open(os.path.join(a.out_dir, "latest.json"), "w") as f:
            json.dump(r, f, indent=2, default=str)
            f.write("\n")
        with open(os.path.join(a.out_dir, "latest.md"), "w") as f:
            f.write(md)
    print(md)
    print(f"{r['checks_passed']} passed, {r['checks_failed']} failed")
    return 0 if r["checks_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
