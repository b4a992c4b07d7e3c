"""Fault scenarios on a real two-node Ray cluster on 127.0.0.1 — ``make chaos``.

Each scenario starts its own cluster with ``scripts/local-cluster.sh`` (head + one worker node,
1 CPU each, token auth), runs real raylight work on it, kills something mid-way, and checks what
survived:

- ``train_node_loss``: ``raylight submit -- train`` with 2 elastic workers (one per node); the
  worker node is killed (SIGKILL of its raylet and every process under it) after epoch 3. The
  job must finish every epoch on the surviving node from the last checkpoint; every epoch
  reported before the loss must be in the final history unchanged, once; one tracking run.
- ``sweep_node_loss``: ``raylight submit -- tune`` with one-CPU trials on both nodes; the worker
  node is killed once a trial there has reported. Every trial must end TERMINATED (the one that
  lost its node is retried from its checkpoint), no trial that had finished is run again.
- ``serve_replica_kill`` / ``serve_node_loss``: ``raylight serve`` autoscaling between 2 and 3
  replicas under a bounded request loop (127.0.0.1 only); one replica actor is killed, or the node hosting a
  replica. Failures must stay within the requests in flight at the kill, and Serve must be
  back to 2 running replicas.

Every loop here is bounded in count and time. Prints a table (scenario → outcome → data lost)
and writes ``benchmarks/results/chaos.json``; exit status 1 if any scenario lost data or failed.

    .venv/bin/python scripts/chaos.py [--only train_node_loss,serve_node_loss] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from raylight.net import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EPOCH_LINE = re.compile(r"epoch\s+(\d+)/(\d+)\s+train_loss (\S+)\s+val_loss (\S+)")


@dataclass
class Outcome:
    """What one scenario did and what it lost."""

    scenario: str
    ok: bool
    outcome: str
    data_lost: int
    recovery_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the cluster


def _clean_env(**extra: str) -> dict[str, str]:
    # A caller's own RAY_* settings (an embedded test Ray, an address) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", **extra}


@dataclass
class Cluster:
    """A running local two-node cluster (see scripts/local-cluster.sh)."""

    state: Path
    env: dict[str, str]
    dashboard: str
    tmp: str

    @property
    def args(self) -> list[str]:
        """The raylight overrides that submit to this cluster."""
        return [
            "cluster=local_cluster",
            f"cluster.address={self.dashboard}",
            f"cluster.token_path={self.state / 'token'}",
        ]

    def ray_env(self) -> dict[str, str]:
        return _clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.state / "token"))


@contextmanager
def local_cluster(workdir: Path) -> Iterator[Cluster]:
    """Head + worker node on 127.0.0.1 with fast node-failure detection, torn down after."""
    state = workdir / "cluster"
    state.mkdir(parents=True, exist_ok=True)
    gcs, dash = free_port(), free_port()
    env = _clean_env(
        RAYLIGHT_CLUSTER_DIR=str(state),
        RAYLIGHT_GCS_PORT=str(gcs),
        RAYLIGHT_DASHBOARD_PORT=str(dash),
        RAYLIGHT_CLIENT_PORT=str(free_port()),
        BIN=str(BIN),
        # The GCS declares a node dead after 3 missed 1 s health checks (Ray's defaults, 3 s x
        # 5, suit real networks; here they would only make every scenario slower).
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    script = str(ROOT / "scripts" / "local-cluster.sh")
    up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        raise RuntimeError("local cluster did not start:\n" + up.stdout + up.stderr)
    tmp = f"/tmp/raylight-cluster-{os.getuid()}-{gcs}/"
    try:
        yield Cluster(state=state, env=env, dashboard=f"http://127.0.0.1:{dash}", tmp=tmp)
    finally:
        subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def kill_worker_node(cluster: Cluster) -> list[int]:
    """SIGKILL the worker node's raylet and every process under it, all at once: a machine
    that vanished, not a clean ``ray stop``. Returns the killed pids."""
    raylets = [
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit()
        and "raylet/raylet " in (cmd := _cmdline(int(d.name)))
        and cluster.tmp in cmd
        and "__internal_head__" not in cmd
    ]
    if len(raylets) != 1:
        raise RuntimeError(f"expected one worker-node raylet, found {raylets}")
    kids = _children()
    doomed, todo = [], list(raylets)
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo.extend(kids.get(pid, []))
    for pid in doomed:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return doomed


def _raylight(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "raylight"), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


class _Lines:
    """A process's output lines, read on a thread, each with its arrival time."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait_for(self, pred: Callable[[str], bool], timeout: float) -> bool:
        deadline = time.time() + timeout
        seen = 0
        while time.time() < deadline:
            for _, line in self.lines[seen:]:
                if pred(line):
                    return True
            seen = len(self.lines)
            if self.proc.poll() is not None and not self._t.is_alive():
                return any(pred(line) for _, line in self.lines[seen:])
            time.sleep(0.1)
        return False

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = -9
        self._t.join(timeout=10)
        return rc

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


# ----------------------------------------------------------------------------- scenarios


def _mlflow_history(
    output_dir: Path, run_name: str, key: str
) -> tuple[int, list[tuple[int, float]]]:
    """(number of runs named run_name, the first one's metric history as (step, value))."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs(
            [e.experiment_id], filter_string=f"attributes.run_name = '{run_name}'"
        )
    ]
    if not runs:
        return 0, []
    hist = client.get_metric_history(runs[0].info.run_id, key)
    return len(runs), sorted((m.step, m.value) for m in hist)


def train_node_loss(workdir: Path, epochs: int = 40, kill_after: int = 3) -> Outcome:
    """Kill the worker node while a 2-worker elastic training job runs on both nodes."""
    import pandas as pd

    out = workdir / "out"
    with local_cluster(workdir) as cluster:
        job = _raylight(
            ["submit", "--follow", *cluster.args, "--", "train", "data=penguins",
             f"trainer.max_epochs={epochs}", "data.batch_size=8", "model.hidden_dims=[16]",
             "scaling.num_workers=2", "scaling.min_workers=1", "scaling.worker_start_timeout_s=20",
             "trainer.max_failures=2", f"output_dir={out}", "run_name=nodeloss"],
            cluster.env,
        )  # fmt: skip
        lines = _Lines(job)
        started = lines.wait_for(lambda s: f"epoch {kill_after:>3}/" in s, timeout=300)
        if not started:
            lines.finish(30)
            return Outcome("train_node_loss", False, "training never reached the kill point", 0,
                           details={"log_tail": lines.text()[-3000:]})  # fmt: skip
        t_kill = time.time()
        killed = kill_worker_node(cluster)
        rc = lines.finish(timeout=600)
    reported: dict[int, tuple[float, float, float]] = {}  # epoch -> (time, train_loss, val_loss)
    repeats = 0
    for t, line in lines.lines:
        m = EPOCH_LINE.search(line)
        if m:
            ep = int(m.group(1))
            repeats += ep in reported
            reported.setdefault(ep, (t, float(m.group(3)), float(m.group(4))))
    before = {ep: v for ep, v in reported.items() if v[0] <= t_kill}
    # Recovery: the longest silence between two epochs after the kill (detection, the failed
    # full-size attempt, the smaller group's start and checkpoint restore).
    times = sorted([t_kill] + [t for t, *_ in reported.values() if t > t_kill])
    gap = max((b - a for a, b in pairwise(times)), default=None)
    n_runs, hist = _mlflow_history(out, "nodeloss", "val_loss")
    logged = dict(hist)
    # "Reported as done" = printed on the driver before the kill: each must be in the final
    # tracking history (step = epoch - 1) with the value that was printed.
    lost = [
        ep for ep, (_, _, v) in before.items() if abs(logged.get(ep - 1, float("nan")) - v) > 5e-5
    ]
    complete = sorted(s for s, _ in hist) == list(range(epochs))
    # The driver's epoch log (logs/epochs.csv) must hold every epoch once, too.
    log = out / "runs" / "nodeloss" / "logs" / "epochs.csv"
    logged_epochs = [int(x) for x in pd.read_csv(log)["epoch"]] if log.exists() else []
    complete = complete and logged_epochs == list(range(epochs))
    ok = rc == 0 and not lost and complete and n_runs == 1 and repeats == 0
    return Outcome(
        "train_node_loss",
        ok,
        (f"job {'SUCCEEDED' if rc == 0 else f'failed rc={rc}'}; {len(before)} epoch(s) before the "
         f"loss, all {epochs} done, {n_runs} tracking run(s), {repeats} epoch(s) repeated"),
        len(lost) + (0 if complete else epochs - len(hist)),
        recovery_s=round(gap, 1) if gap is not None else None,
        details={"killed_pids": len(killed), "epochs_before_kill": sorted(before),
                 "history_steps": len(hist), "lost_epochs": lost,
                 "log_tail": lines.text()[-1500:] if not ok else ""},
    )  # fmt: skip


def _trial_rows(sweep: Path) -> dict[str, int]:
    """Reported results per trial directory (Tune's result.json, one line per report)."""
    out = {}
    for f in sweep.glob("*/result.json"):
        out[f.parent.name] = sum(1 for line in f.read_text().splitlines() if line.strip())
    return out


def _trial_iterations(sweep: Path) -> dict[str, list[int]]:
    """Each trial's reported ``training_iteration`` values, in order."""
    out = {}
    for f in sweep.glob("*/result.json"):
        lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
        out[f.parent.name] = [int(json.loads(ln)["training_iteration"]) for ln in lines]
    return out


def _trial_failures(sweep: Path) -> dict[str, int]:
    """Tune's per-trial failure counts from the newest experiment state file."""
    states = sorted(sweep.glob("experiment_state-*.json"))
    if not states:
        return {}
    out = {}
    for entry in json.loads(states[-1].read_text()).get("trial_data", []):
        meta = json.loads(entry[1]) if isinstance(entry, list) else entry
        trial = json.loads(entry[0]) if isinstance(entry, list) else {}
        tid = trial.get("trial_id") or meta.get("trial_id") or str(len(out))
        out[str(tid)] = int(meta.get("num_failures", 0))
    return out


def sweep_node_loss(workdir: Path, trials: int = 4, epochs: int = 8) -> Outcome:
    """Kill the worker node while a sweep runs one-CPU trials on both nodes."""
    out = workdir / "out"
    sweep = out / "sweeps" / "nodeloss"
    with local_cluster(workdir) as cluster:
        job = _raylight(
            ["submit", "--follow", *cluster.args, "--", "tune", "experiment=penguins_mlp",
             "hparams_search=penguins_optuna", f"tune.num_samples={trials}", "tune.scheduler.type=none",
             f"trainer.max_epochs={epochs}", "data.batch_size=8", "tune.name=nodeloss",
             "trainer.max_failures=2", f"output_dir={out}"],
            cluster.env,
        )  # fmt: skip
        lines = _Lines(job)
        deadline = time.time() + 300
        # Kill once two trials have reported (both nodes busy) and before any has finished.
        while time.time() < deadline and job.poll() is None:
            rows = _trial_rows(sweep)
            if sum(1 for n in rows.values() if n >= 2) >= 2:
                break
            time.sleep(0.2)
        finished_before = {k for k, n in _trial_rows(sweep).items() if n >= epochs}
        kill_worker_node(cluster)
        rc = lines.finish(timeout=600)
    statuses: dict[str, str] = {}
    if (sweep / "trials.csv").exists():
        import pandas as pd

        df = pd.read_csv(sweep / "trials.csv")
        statuses = dict(zip(df["trial_id"].astype(str), df["status"].astype(str), strict=True))
    errored = [t for t, st in statuses.items() if st not in ("COMPLETED", "TERMINATED")]
    iters = _trial_iterations(sweep)
    # Every trial reports each epoch exactly once: a retried trial resumed from its checkpoint
    # (no epoch lost, none reported twice) and no finished trial ran again.
    broken = [t for t, its in iters.items() if its != list(range(1, epochs + 1))]
    failures = _trial_failures(sweep)
    retried = sum(1 for n in failures.values() if n)
    ok = rc == 0 and len(statuses) == trials and not errored and not broken and retried >= 1
    return Outcome(
        "sweep_node_loss",
        ok,
        (f"job {'SUCCEEDED' if rc == 0 else f'failed rc={rc}'}; {len(statuses) - len(errored)}/"
         f"{trials} trials completed, {retried} retried from its checkpoint after the loss, "
         f"{len(broken)} with an epoch lost or repeated"),
        len(errored) + len(broken) + (trials - len(statuses)),
        details={"finished_before_kill": sorted(finished_before), "statuses": statuses,
                 "num_failures": failures, "log_tail": lines.text()[-1500:] if not ok else ""},
    )  # fmt: skip


RECORD = {"island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 14.8,
          "flipper_length_mm": 212.0, "body_mass_g": 5200.0, "sex": "female"}  # fmt: skip


class _Load:
    """``clients`` closed-loop HTTP clients on 127.0.0.1, bounded in time and count.

    Each request is recorded as (start, end, status); status 0 is a connection error or timeout.
    """

    def __init__(self, url: str, clients: int = 4, max_s: float = 120, max_requests: int = 50_000):
        self.url, self.clients = url, clients
        self.deadline = time.time() + max_s
        self.max_requests = max_requests
        self.done: list[tuple[float, float, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        import urllib.error
        import urllib.request

        body = json.dumps(RECORD).encode()
        while not self.stop.is_set() and time.time() < self.deadline:
            if len(self.done) >= self.max_requests:
                return
            req = urllib.request.Request(
                self.url, data=body, headers={"content-type": "application/json"}
            )
            t0 = time.time()
            try:
                with urllib.request.urlopen(req, timeout=15) as r:
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            except (urllib.error.URLError, OSError):
                code = 0
            self.done.append((t0, time.time(), code))

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def ok_since(self, t: float) -> int:
        return sum(1 for t0, _, code in self.done if t0 >= t and code == 200)


def _replicas(cluster: Cluster, app: str) -> list[dict[str, Any]]:
    """ALIVE replica actors of ``app`` (pid, node), from Ray's state API."""
    r = subprocess.run(
        [str(BIN / "ray"), "list", "actors", "--detail", "--format", "json", "--limit", "1000",
         "--filter", "state=ALIVE", "--address", cluster.dashboard],
        capture_output=True, text=True, timeout=60, env=cluster.ray_env(),
    )  # fmt: skip
    if r.returncode != 0:
        return []
    return [
        a
        for a in json.loads(r.stdout)
        if a.get("class_name", "").startswith(f"ServeReplica:{app}:")
    ]


def _head_node(cluster: Cluster) -> str:
    r = subprocess.run(
        [str(BIN / "ray"), "list", "nodes", "--format", "json", "--address", cluster.dashboard],
        capture_output=True, text=True, timeout=60, env=cluster.ray_env(),
    )  # fmt: skip
    return next(n["node_id"] for n in json.loads(r.stdout) if n.get("is_head_node"))


def _serve_fault(
    name: str, cluster: Cluster, url: str, app: str, kill: Callable[[], None], clients: int = 4
) -> Outcome:
    """Run the load, kill, wait until 2 replicas are ALIVE again and requests succeed."""
    with _Load(url, clients) as load:
        time.sleep(3.0)
        if not load.ok_since(0):
            return Outcome(name, False, "no request succeeded before the fault", 0)
        t_kill = time.time()
        kill()
        recovered = None
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.5)
            if len(_replicas(cluster, app)) >= 2 and load.ok_since(time.time() - 1.0) > 0:
                recovered = time.time()
                break
        time.sleep(3.0)  # traffic after recovery must all succeed
    failed = [(t0, t1, c) for t0, t1, c in load.done if c != 200]
    in_flight = sum(1 for t0, t1, _ in load.done if t0 <= t_kill < t1)
    after = [c for t0, _, c in load.done if recovered and t0 > recovered]
    # Lost = failures beyond what was in flight when the fault hit, plus any failure after
    # Serve said it had recovered.
    lost = max(0, len(failed) - clients) + sum(1 for c in after if c != 200)
    ok = recovered is not None and lost == 0
    codes: dict[str, int] = {}
    for *_, c in failed:
        codes[str(c)] = codes.get(str(c), 0) + 1
    return Outcome(
        name, ok,
        (f"{len(load.done)} requests, {len(failed)} failed ({in_flight} in flight at the kill, "
         f"bound {clients}), {'2 replicas ALIVE again' if recovered else 'NOT recovered'}, "
         f"{len(after)} requests after recovery all {'ok' if all(c == 200 for c in after) else 'NOT ok'}"),
        lost,
        recovery_s=round(recovered - t_kill, 1) if recovered else None,
        details={"failed_by_status": codes, "requests": len(load.done),
                 "failed_window_s": [round(failed[0][0] - t_kill, 2), round(failed[-1][1] - t_kill, 2)] if failed else []},
    )  # fmt: skip


def serve_faults(workdir: Path) -> list[Outcome]:
    """A replica's process, then the worker node hosting a replica, killed under load."""
    out = workdir / "out"
    port = free_port()
    app = "chaos"
    with local_cluster(workdir) as cluster:
        train = _raylight(
            ["submit", "--follow", *cluster.args, "--", "train", "data=penguins", "scaling=single",
             "trainer.max_epochs=3", "model.hidden_dims=[16]", f"output_dir={out}", "run_name=m"],
            cluster.env,
        )  # fmt: skip
        if _Lines(train).finish(timeout=600) != 0:
            return [Outcome("serve_replica_kill", False, "training the bundle failed", 0)]
        deploy = _raylight(
            ["submit", "--follow", *cluster.args, "--", "serve", f"bundle={out}/runs/m/bundle",
             f"name={app}", f"port={port}", "proxy_location=HeadOnly", "num_cpus=0.25",
             # Autoscaling with a floor of 2: what restores capacity after a loss is Serve's
             # controller holding the deployment at its minimum, as in production.
             "autoscaling={min_replicas: 2, max_replicas: 3, target_ongoing_requests: 8}",
             "drift.enabled=false", f"output_dir={out}"],
            cluster.env,
        )  # fmt: skip
        lines = _Lines(deploy)
        if lines.finish(timeout=600) != 0:
            return [Outcome("serve_replica_kill", False, "deploy failed", 0,
                            details={"log_tail": lines.text()[-2000:]})]  # fmt: skip
        url = f"http://127.0.0.1:{port}/predict"
        results = []

        def kill_replica() -> None:
            victim = _replicas(cluster, app)[0]
            os.kill(int(victim["pid"]), signal.SIGKILL)

        results.append(_serve_fault("serve_replica_kill", cluster, url, app, kill_replica))
        head = _head_node(cluster)
        placed = {a["node_id"] for a in _replicas(cluster, app)}
        if placed == {head}:
            results.append(Outcome("serve_node_loss", False, "both replicas on the head node", 0))
        else:
            results.append(
                _serve_fault(
                    "serve_node_loss", cluster, url, app, lambda: kill_worker_node(cluster)
                )
            )
            results[-1].details["replica_nodes_before"] = len(placed)
    return results


SCENARIOS: dict[str, Callable[[Path], Outcome | list[Outcome]]] = {
    "train_node_loss": train_node_loss,
    "sweep_node_loss": sweep_node_loss,
    "serve_faults": serve_faults,
}


# ----------------------------------------------------------------------------- report


def print_table(results: list[Outcome]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="raylight chaos: fault scenarios on a local two-node cluster")
    for col in ("scenario", "result", "outcome", "recovery", "data lost"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.scenario,
            "[green]ok[/]" if r.ok else "[red]FAILED[/]",
            r.outcome,
            f"{r.recovery_s:.1f} s" if r.recovery_s is not None else "-",
            str(r.data_lost),
        )
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated scenario names")
    p.add_argument("--keep", action="store_true", help="keep the scenarios' work directories")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chaos.json"))
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    results = []
    base = Path(tempfile.mkdtemp(prefix="raylight-chaos-"))
    for name in names:
        print(f"--- {name}", flush=True)
        t = time.time()
        try:
            got = SCENARIOS[name](base / name)
        except Exception as exc:  # a scenario that cannot run is a failed scenario, reported
            got = Outcome(name, False, f"error: {exc!r}", 0)
        for r in got if isinstance(got, list) else [got]:
            r.details["wall_s"] = round(time.time() - t, 1)
            print(f"    {r.scenario}: {'ok' if r.ok else 'FAILED'}: {r.outcome}", flush=True)
            results.append(r)
    print_table(results)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _results import RESULTS_DIR, machine_info, write_results_md

    out = Path(args.out)
    out.write_text(
        json.dumps({"machine": machine_info(), "scenarios": [asdict(r) for r in results]}, indent=2)
    )
    print(f"wrote {args.out}")
    if out.resolve().parent == RESULTS_DIR.resolve():
        # RESULTS.md's fault table is rendered from results/chaos.json: refresh it now, not at
        # the next benchmark's save.
        write_results_md()
        print("updated benchmarks/RESULTS.md")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0 if all(r.ok and r.data_lost == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
