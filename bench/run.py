#!/usr/bin/env python3
"""Runs Larder's standard load scenarios and records the figures.

    python3 bench/run.py                 # every scenario
    python3 bench/run.py fanout cross    # some of them

Builds release binaries, starts `larder serve` processes (and uses the local
PostgreSQL and Redis), runs `larder-loadgen`, and writes one JSON report per
scenario to bench/results/: the load generator's own report plus, for the
same interval,
  - the server processes' CPU seconds (/proc/<pid>/stat) and peak RSS (VmHWM);
  - their context switches and system calls (`perf stat` attached to them;
    without perf, context switches from /proc/<pid>/task/*/status);
  - PostgreSQL's CPU seconds: every process of the cluster from /proc, plus
    what the postmaster collected from backends that exited;
  - PostgreSQL's statements (pg_stat_statements, when it is in
    shared_preload_libraries) and committed transactions (pg_stat_database);
  - Redis's CPU seconds (INFO cpu);
and each of them per edit.

Scenarios (DESIGN.md §14, issue "Load generator and performance"):
  fanout    50 lists x 4 clients x 5 edits/s for 20 s, one replica
  fanout-sqlite  the same on the single-node default (SQLite, no Redis)
  cross     the same over two replicas relaying through Redis
  ramp      raise the rate over two replicas until p99 > 100 ms or a loss
  idle      5,000 idle connections over 1,000 lists (and 1,000 over 1,000,
            to separate the cost of a connection from the cost of a list)
  coldload  lists built from 10,000 edits each (holding at most 100 items,
            and again never clearing any); a fresh client's first full
            state after a server restart
  ramp-one  ramp on one replica
  fanout-ywebsocket, ramp-ywebsocket
            fanout and ramp-one against the y-websocket reference server
            (Node, bench/ywebsocket, installed with npm on first use; it
            keeps documents in memory and stores nothing)
"""

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET = ROOT / "target" / "release"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
DB = "larder_bench"
USER_HZ = os.sysconf("SC_CLK_TCK")

# The per-connection message limit protects against abusive clients; the
# benchmark measures throughput, so it is lifted (documented in the README).
SERVER_ENV = {
    "LARDER_MESSAGES_PER_SECOND": "1000000",
    "LARDER_MESSAGE_BURST": "1000000",
    # The load generator creates its lists through the API as one user, and
    # the coldload lists are opened again after a restart with that token.
    "LARDER_WRITES_PER_MINUTE": "100000000",
    "LARDER_ACCESS_TOKEN_TTL_SECS": "86400",
    "LARDER_JWT_SECRET": "larder-benchmark-secret-larder-benchmark-secret",
    # Every simulated client connects from 127.0.0.1: the per-address
    # connection cap is lifted, the per-process one raised.
    "LARDER_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "LARDER_MAX_CONNECTIONS": "100000",
    "RUST_LOG": "warn",
}


def psql(sql, db="postgres"):
    out = subprocess.run(
        ["psql", f"{PG}/{db}", "-XAtq", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def fresh_database():
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def committed_transactions():
    value = psql(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DB}'")
    return int(value or 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, redis=False, sqlite=False):
        self.port = free_port()
        env = dict(os.environ, **SERVER_ENV)
        env["DATABASE_URL"] = f"{PG}/{DB}"
        if sqlite:
            # The single-node default: one SQLite file, relay in process.
            self.folder = tempfile.TemporaryDirectory(prefix="larder-bench-")
            env["DATABASE_URL"] = f"sqlite://{self.folder.name}/larder.db"
        env["LARDER_LISTEN"] = f"127.0.0.1:{self.port}"
        env.pop("REDIS_URL", None)
        if redis:
            env["REDIS_URL"] = REDIS
        self.proc = subprocess.Popen([str(TARGET / "larder"), "serve"], env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def ready(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def url(self):
        return f"ws://127.0.0.1:{self.port}/v1/sync/{{list}}?token={{token}}"

    def api(self):
        """Where the load generator signs up and creates its lists."""
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self):
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / USER_HZ

    def memory_kib(self, field):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class YWebsocketServer:
    """The y-websocket reference server (Node, documents in memory only)."""

    def __init__(self):
        directory = ROOT / "bench" / "ywebsocket"
        if not (directory / "node_modules").exists():
            subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=directory, check=True)
        self.port = free_port()
        env = dict(os.environ, HOST="127.0.0.1", PORT=str(self.port))
        self.proc = subprocess.Popen(
            ["node", str(directory / "node_modules" / "y-websocket" / "bin" / "server.cjs")],
            env=env, stdout=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("y-websocket server did not start")

    def url(self):
        return f"ws://127.0.0.1:{self.port}/{{list}}"

    cpu_seconds = Server.cpu_seconds
    memory_kib = Server.memory_kib
    stop = Server.stop


def loadgen(urls, *args, stderr_line=None, on_line=None):
    cmd = [str(TARGET / "larder-loadgen")]
    for url in urls:
        cmd += ["--url", url]
    cmd += [str(a) for a in args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stderr_line:
        for line in proc.stderr:
            sys.stderr.write(line)
            if stderr_line in line:
                on_line()
                break
    out, err = proc.communicate()
    sys.stderr.write(err)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed: {err}")
    return json.loads(out)


def proc_cpu_seconds(pid, children=False):
    """utime + stime of a process (and of its reaped children) from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / USER_HZ


def postmaster_pid():
    """The PostgreSQL postmaster's pid, from postmaster.pid in its data folder."""
    try:
        data = psql("SHOW data_directory")
        return int((Path(data) / "postmaster.pid").read_text().split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def postgres_cpu_seconds():
    """CPU of the whole cluster: the postmaster with what it reaped, and every
    process it started that is still running (backends, WAL writer, ...)."""
    root = postmaster_pid()
    if root is None:
        return None
    total = proc_cpu_seconds(root, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root:
            total += proc_cpu_seconds(int(entry.name))
    return total


def statement_count():
    """Statements run in the benchmark database, BEGIN and COMMIT included
    (pg_stat_statements), or None when the extension is not loaded."""
    if "pg_stat_statements" not in psql("SHOW shared_preload_libraries"):
        return None
    psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    value = psql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
        f"JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{DB}'")
    return int(value or 0)


def redis_cpu_seconds():
    try:
        out = subprocess.run(["redis-cli", "-u", REDIS, "info", "cpu"], check=True,
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    values = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return float(values["used_cpu_user"]) + float(values["used_cpu_sys"])


def task_context_switches(pid):
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class KernelCounters:
    """Context switches and system calls of the server processes over a run:
    `perf stat` attached to them, or /proc when perf is missing or refused."""

    EVENTS = "raw_syscalls:sys_enter,context-switches"

    def __init__(self, pids):
        self.pids = pids
        self.output = tempfile.NamedTemporaryFile(prefix="larder-perf-", suffix=".csv", delete=False)
        self.perf = None
        self.switches_before = [task_context_switches(p) for p in pids]
        if shutil.which("perf") and os.environ.get("BENCH_PERF", "1") != "0":
            self.perf = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-e", self.EVENTS, "-o", self.output.name,
                 "-p", ",".join(str(p) for p in pids)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)  # let it attach before the load starts
            if self.perf.poll() is not None:
                self.perf = None

    def stop(self):
        counts = {}
        if self.perf is not None:
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait(timeout=30)
            for line in Path(self.output.name).read_text().splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[0].strip().isdigit():
                    counts[parts[2]] = int(parts[0])
        os.unlink(self.output.name)
        result = {"source": "perf stat" if counts else "/proc"}
        if "context-switches" in counts:
            result["context_switches"] = counts["context-switches"]
        else:
            result["context_switches"] = sum(
                task_context_switches(p) - b for p, b in zip(self.pids, self.switches_before))
        if "raw_syscalls:sys_enter" in counts:
            result["syscalls"] = counts["raw_syscalls:sys_enter"]
        return result


def per_edit_us(seconds, edits):
    return None if seconds is None or not edits else seconds / edits * 1e6


def delta(after, before):
    return None if after is None or before is None else after - before


def measured(servers, run, database=True, redis=False):
    """Runs `run` and adds what the servers, PostgreSQL and Redis spent."""
    cpu_before = [s.cpu_seconds() for s in servers]
    tx_before = committed_transactions() if database else 0
    statements_before = statement_count() if database else None
    pg_before = postgres_cpu_seconds() if database else None
    redis_before = redis_cpu_seconds() if redis else None
    kernel = KernelCounters([s.proc.pid for s in servers])
    report = run()
    counters = kernel.stop()
    report["server_cpu_seconds"] = [s.cpu_seconds() - c for s, c in zip(servers, cpu_before)]
    report["server_peak_rss_kib"] = [s.memory_kib("VmHWM") for s in servers]
    edits = report.get("edits_sent")
    server_cpu = sum(report["server_cpu_seconds"])
    report["server_cpu_us_per_edit"] = per_edit_us(server_cpu, edits)
    report["server_kernel_counters"] = counters
    if edits:
        for key in ("context_switches", "syscalls"):
            if key in counters:
                report[f"server_{key}_per_edit"] = counters[key] / edits
    system_cpu = server_cpu
    if database:
        time.sleep(1.0)  # pg_stat_database lags a little
        report["postgres_transactions"] = committed_transactions() - tx_before
        if edits:
            report["edits_per_postgres_transaction"] = edits / max(report["postgres_transactions"], 1)
        statements = delta(statement_count(), statements_before)
        report["postgres_statements"] = statements
        report["postgres_statements_per_edit"] = statements / edits if statements is not None and edits else None
        pg_cpu = delta(postgres_cpu_seconds(), pg_before)
        report["postgres_cpu_seconds"] = pg_cpu
        report["postgres_cpu_us_per_edit"] = per_edit_us(pg_cpu, edits)
        system_cpu += pg_cpu or 0
    if redis:
        redis_cpu = delta(redis_cpu_seconds(), redis_before)
        report["redis_cpu_seconds"] = redis_cpu
        report["redis_cpu_us_per_edit"] = per_edit_us(redis_cpu, edits)
        system_cpu += redis_cpu or 0
    report["system_cpu_us_per_edit"] = per_edit_us(system_cpu, edits)
    return report


# The standard loads: 50 lists x 4 clients, at 1,000 edits/s for 20 s, or
# ramping from 1,000 edits/s by 1.5x per 5 s step.
FIXED = ["--mode", "fixed", "--lists", 50, "--clients", 4, "--rate", 1000, "--duration", 20]
RAMP = ["--mode", "ramp", "--lists", 50, "--clients", 4, "--rate", 1000,
        "--ramp-factor", 1.5, "--duration", 5, "--warmup", 1]


def api_args(servers):
    """`--api` for Larder (lists live in a family), nothing for others."""
    return ["--api", servers[0].api()] if hasattr(servers[0], "api") else []


def run_load(make_servers, load, database=True, redis=False):
    """Starts the servers, runs the load over all of them, stops them."""
    if database:
        fresh_database()
    servers = make_servers()
    try:
        return measured(servers, lambda: loadgen([s.url() for s in servers], *load, *api_args(servers)),
                        database=database, redis=redis)
    finally:
        for s in servers:
            s.stop()


def fanout():
    return run_load(lambda: [Server()], FIXED)


def fanout_sqlite():
    """fanout on the single-node default (SQLite file, in-process relay)."""
    return run_load(lambda: [Server(sqlite=True)], FIXED, database=False)


def fanout_ywebsocket():
    """fanout against the y-websocket reference server, for comparison."""
    return run_load(lambda: [YWebsocketServer()], FIXED, database=False)


def ramp_ywebsocket():
    """ramp on one y-websocket reference server (it has no replicas)."""
    return run_load(lambda: [YWebsocketServer()], RAMP, database=False)


def ramp_one():
    """ramp on one Larder replica, to compare with ramp_ywebsocket."""
    return run_load(lambda: [Server()], RAMP)


def cross():
    return run_load(lambda: [Server(redis=True), Server(redis=True)], FIXED, redis=True)


def ramp():
    return run_load(lambda: [Server(redis=True), Server(redis=True)], RAMP, redis=True)


def idle_run(lists, clients):
    fresh_database()
    server = Server()
    try:
        time.sleep(1.0)
        before = server.memory_kib("VmRSS")
        sample = {}

        def held():
            time.sleep(3.0)  # let allocations settle
            sample["rss"] = server.memory_kib("VmRSS")

        report = loadgen([server.url()], "--mode", "idle", "--lists", lists, "--clients", clients,
                         "--duration", 10, *api_args([server]),
                         stderr_line="connections open", on_line=held)
        report["server_rss_before_kib"] = before
        report["server_rss_held_kib"] = sample.get("rss", 0)
        return report
    finally:
        server.stop()


def idle():
    many = idle_run(1000, 5)
    one_each = idle_run(1000, 1)
    extra = many["connections"] - one_each["connections"]
    per_conn = (many["server_rss_held_kib"] - one_each["server_rss_held_kib"]) / max(extra, 1)
    per_all = (many["server_rss_held_kib"] - many["server_rss_before_kib"]) / max(many["connections"], 1)
    return {
        "mode": "idle",
        "runs": [many, one_each],
        "kib_per_idle_connection": per_conn,
        "kib_per_connection_including_its_share_of_lists": per_all,
    }


def coldload_run(max_items):
    fresh_database()
    lists_file = RESULTS / "coldload-lists.json"
    server = Server()
    try:
        build = loadgen([server.url()], "--mode", "coldload-build", "--lists", 5,
                        "--history", 10000, "--max-items", max_items,
                        "--lists-file", lists_file, *api_args([server]))
    finally:
        server.stop()  # graceful: everything is stored (and compacted)
    server = Server()
    try:
        report = loadgen([server.url()], "--mode", "coldload", "--lists-file", lists_file)
        report["build"] = build
        return report
    finally:
        server.stop()


def coldload():
    # A family's list: items come and go (bought ones are cleared), so it
    # holds at most 100 items whatever its history.
    report = coldload_run(100)
    # The same history with nothing ever cleared: 4,000 items, a 1 MB state.
    report["growing_list"] = coldload_run(0)
    return report


SCENARIOS = {
    "fanout": fanout,
    "fanout-sqlite": fanout_sqlite,
    "cross": cross,
    "ramp": ramp,
    "idle": idle,
    "coldload": coldload,
    "ramp-one": ramp_one,
    "fanout-ywebsocket": fanout_ywebsocket,
    "ramp-ywebsocket": ramp_ywebsocket,
}


def main():
    names = sys.argv[1:] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["cargo", "build", "--release", "-p", "larder-server", "-p", "larder-loadgen"],
                   cwd=ROOT, check=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"== {name}", file=sys.stderr)
        report = SCENARIOS[name]()
        report["machine"] = {"cpus": os.cpu_count()}
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({name: report}, indent=2))


if __name__ == "__main__":
    main()
