"""`make bench`: run every tests/bench/bench_*.py, print one Markdown table, record var/bench/latest.json.

Each module exposes `run(quick: bool) -> dict` and runs in its own interpreter (a crash, hang or leak
in one cannot take the others with it; a failure is reported as a row and the rest still run).
A module may return `{"rows": [...], "notes": [...]}` with rows made by tests.bench.common.row, a
bare list of rows, or a plain dict of metrics ({"ingest_per_s": 1234, ...}), which is rendered as
rows without a peer. The previous latest.json is kept as previous.json for `make bench-compare`.

    python -m tests.bench.run [--quick] [--only engine,proxy] [--list]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from tests.bench.common import BENCH_DIR, ROOT, Row, fmt_num

BENCH_PKG = "tests.bench"
HERE = Path(__file__).resolve().parent
COLUMNS = ("Benchmark", "Metric", "esafety", "Peer", "Peer figure", "Ratio", "Unit", "Goal", "Met")
ROW_KEYS = ("benchmark", "metric", "ours", "peer", "peer_name", "ratio", "unit", "goal", "met")
# Seconds a module may take before it is stopped (full, quick); override with BENCH_TIMEOUT.
TIMEOUTS = (900.0, 240.0)


def discover(directory: Path = HERE) -> list[str]:
    """Names of the benchmark modules: bench_engine.py -> 'engine'."""
    return sorted(p.stem.removeprefix("bench_") for p in directory.glob("bench_*.py"))


# -- normalising what modules return -----------------------------------------------------------------


def _num(v: Any) -> Any:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def _complete(r: dict[str, Any], module: str) -> Row:
    out: Row = {k: r.get(k) for k in ROW_KEYS}
    out["benchmark"] = out["benchmark"] or module
    out["metric"] = str(out["metric"] or "?")
    out["peer_name"] = out["peer_name"] or ""
    out["unit"] = out["unit"] or ""
    out["goal"] = out["goal"] or ""
    if out["ratio"] is None and _num(out["ours"]) is not None and _num(out["peer"]):
        out["ratio"] = round(out["ours"] / out["peer"], 3)
    for k, v in r.items():  # keep extras (note, better, ...) for the JSON and bench-compare
        out.setdefault(k, v)
    return out


def _flatten(d: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """Nested metrics as dotted keys: the top level always, deeper dicts when they hold only figures
    (sqlite.queue_ms.first_page); a deeper dict holding dicts becomes one text cell."""
    items: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not ({"ours", "metric"} & v.keys()):
            if depth == 0 or not any(isinstance(x, dict | list | tuple) for x in v.values()):
                items.extend(_flatten(v, f"{key}.", depth + 1))
            else:
                items.append((key, _summary(v)))
        elif isinstance(v, dict) and not v:
            continue
        else:
            items.append((key, v))
    return items


def _summary(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} ({_summary(x)})" if isinstance(x, dict) else f"{k}={_summary(x)}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_summary(x) for x in v) + "]"
    return fmt_num(v)


_UNITS = (("_per_second", "/s"), ("_per_s", "/s"), ("_mb_s", "MB/s"), ("_ms", "ms"), ("_seconds", "s"),
          ("_s", "s"), ("_mb", "MB"), ("_kb", "KB"), ("_bytes", "B"))


def _unit(key: str) -> str:
    for part in reversed(key.split(".")):
        for suffix, u in _UNITS:
            if part.endswith(suffix) or part == suffix[1:]:
                return u
    return ""


def _metric_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A plain dict of metrics as rows. Conventions understood: `goal_K` is K's goal (at least for
    rates, at most otherwise); `P_K` beside K is peer P's figure for K (packets_per_second and
    ndpi_packets_per_second); everything else is a figure of ours without a peer."""
    flat = dict(_flatten({k: v for k, v in result.items() if k not in ("notes", "raw")}))

    def sibling(k: str) -> tuple[str, str, str]:
        head, _, last = k.rpartition(".")
        p, _, rest = last.partition("_")
        return p, rest, f"{head}.{rest}" if head else rest

    goals: dict[str, Any] = {}
    peers: dict[str, tuple[str, str]] = {}
    for k, v in flat.items():
        p, rest, target = sibling(k)
        if not rest or target not in flat or _num(v) is None:
            continue
        if p == "goal":
            goals[target] = v
        else:
            peers[target] = (p, k)
    consumed = {k for _p, k in peers.values()} | {k for k in flat if sibling(k)[0] == "goal" and sibling(k)[2] in goals}
    rows: list[dict[str, Any]] = []
    for k, v in flat.items():
        if k in consumed:
            continue
        if isinstance(v, dict):
            rows.append({"metric": k, **v})
            continue
        r: dict[str, Any] = {"metric": k, "ours": _summary(v) if isinstance(v, list | tuple) else v, "unit": _unit(k)}
        if k in peers:
            r["peer_name"], r["peer"] = peers[k][0], flat[peers[k][1]]
        g = goals.get(k)
        if _num(g) is not None and _num(v) is not None:
            op = ">=" if r["unit"] == "/s" else "<="
            r["goal"], r["met"] = f"{op} {fmt_num(g)}", (v >= g) if op == ">=" else (v <= g)
            r["better"] = "higher" if op == ">=" else "lower"
        rows.append(r)
    return rows


def normalise(module: str, result: Any) -> tuple[list[Row], list[str]]:
    """(rows, notes) from whatever a module's run() returned."""
    notes: list[str] = []
    if isinstance(result, dict) and isinstance(result.get("rows"), list):
        raw_rows: list[Any] = result["rows"]
        n = result.get("notes") or []
        notes = [n] if isinstance(n, str) else [str(x) for x in n]
    elif isinstance(result, list):
        raw_rows = result
    elif isinstance(result, dict):  # a plain dict of metrics
        raw_rows = _metric_rows(result)
        n = result.get("notes") or []
        notes = [n] if isinstance(n, str) else [str(x) for x in n]
    else:
        raise TypeError(f"run() returned {type(result).__name__}; expected a dict or a list of rows")
    rows = []
    for r in raw_rows:
        if not isinstance(r, dict):
            raise TypeError(f"a row is {type(r).__name__}, not a dict: {r!r:.200}")
        rows.append(_complete(r, module))
    return rows, notes


# -- running modules ----------------------------------------------------------------------------------


def run_inline(name: str, quick: bool, package: str = BENCH_PKG) -> dict[str, Any]:
    """Import and run one module in this interpreter; never raises."""
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(f"{package}.bench_{name}")
        result = mod.run(quick)
        rows, notes = normalise(name, result)
        raw = None
        if isinstance(result, dict):  # a plain dict of metrics is kept whole
            raw = result.get("raw") if isinstance(result.get("rows"), list) else result
        return {"name": name, "ok": True, "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
                "notes": notes, "raw": raw, "error": None}
    except BaseException as exc:  # noqa: BLE001 - one benchmark failing must not lose the others
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"name": name, "ok": False, "seconds": round(time.perf_counter() - t0, 1), "rows": [],
                "notes": [], "raw": None, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def run_isolated(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one module in a child interpreter (its output goes to our stderr); never raises."""
    t0 = time.perf_counter()
    with tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".json", delete=False) as tmp:
        result_path = Path(tmp.name)
    cmd = [sys.executable, "-m", f"{BENCH_PKG}.run", "--child", name, "--result", str(result_path)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
    error = None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:.0f}s"
    except KeyboardInterrupt:
        _terminate(proc)
        raise
    finally:
        if proc.poll() is None:
            _terminate(proc)
    try:
        res: dict[str, Any] = json.loads(result_path.read_text()) if result_path.stat().st_size else {}
    except (OSError, ValueError):
        res = {}
    finally:
        result_path.unlink(missing_ok=True)
    if not res:
        res = {"name": name, "ok": False, "rows": [], "notes": [], "raw": None,
               "error": error or f"exited with status {proc.returncode} without a result"}
    elif error:
        res.update(ok=False, error=error)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM first (the child turns it into an exception, so its finally blocks stop its peers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _child(name: str, quick: bool, result_path: Path) -> int:
    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        res = run_inline(name, quick)
    except KeyboardInterrupt as exc:
        res = {"name": name, "ok": False, "rows": [], "notes": [], "raw": None, "error": f"stopped ({exc})"}
    result_path.write_text(json.dumps(res, default=str))
    return 0


# -- output ---------------------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    return fmt_num(v).replace("|", "\\|").replace("\n", " ")


def render_table(results: list[dict[str, Any]]) -> str:
    """One Markdown table: every figure, the peer's figure and the ratio; failed modules as rows."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for res in results:
        if not res.get("ok"):
            err = str(res.get("error") or "failed").splitlines()[0][:160]
            lines.append(f"| {res['name']} | **FAILED**: {_cell(err)} | | | | | | | |")
        for r in res.get("rows", []):
            met = {True: "yes", False: "**no**"}.get(r.get("met"), "")
            ratio = f"{r['ratio']:.2f}x" if _num(r.get("ratio")) is not None else "-"
            lines.append("| " + " | ".join([
                _cell(r["benchmark"]), _cell(r["metric"]), _cell(r.get("ours")),
                _cell(r.get("peer_name") or "") if r.get("peer_name") else "-", _cell(r.get("peer")), ratio,
                _cell(r.get("unit") or ""), _cell(r.get("goal") or ""), met]) + " |")
    return "\n".join(lines)


def render_notes(results: list[dict[str, Any]]) -> str:
    out = []
    for res in results:
        for n in res.get("notes", []):
            out.append(f"- {res['name']}: {n}")
        for r in res.get("rows", []):
            if r.get("note"):
                out.append(f"- {res['name']} / {r['metric']}: {r['note']}")
        if not res.get("ok") and res.get("traceback"):
            out.append(f"- {res['name']} failed:\n\n```\n{res['traceback'].strip()[-2000:]}\n```")
    return "\n".join(out)


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def write_results(payload: dict[str, Any], out_dir: Path = BENCH_DIR) -> Path:
    """latest.json (the old one becomes previous.json) and latest.md; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    latest, previous = out_dir / "latest.json", out_dir / "previous.json"
    if latest.exists():
        latest.replace(previous)
    tmp = latest.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(latest)
    (out_dir / "latest.md").write_text(payload.get("table", "") + "\n\n" + payload.get("notes", "") + "\n")
    return latest


def build_payload(results: list[dict[str, Any]], quick: bool, started: float) -> dict[str, Any]:
    return {
        "schema": 1,
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "quick": quick,
        "git": _git(),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "platform": platform.platform(), "loadavg": os.getloadavg()},
        "modules": {r["name"]: {k: r.get(k) for k in ("ok", "seconds", "error", "notes", "raw")} for r in results},
        "rows": [r2 for r in results for r2 in r.get("rows", [])],
        "table": render_table(results),
        "notes": render_notes(results),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and shorter runs (about 2 minutes)")
    ap.add_argument("--only", default="", help="comma-separated module names (engine,proxy,...)")
    ap.add_argument("--list", action="store_true", help="list the benchmark modules and exit")
    ap.add_argument("--inline", action="store_true", help="run modules in this interpreter (debugging)")
    ap.add_argument("--out", type=Path, default=BENCH_DIR, help="where latest.json goes")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, args.result)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        wanted = [n.strip().removeprefix("bench_") for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)} (have: {', '.join(names)})", file=sys.stderr)
            return 2
        names = [n for n in names if n in wanted]
    timeout = float(os.environ.get("BENCH_TIMEOUT") or TIMEOUTS[1 if args.quick else 0])
    started = time.time()
    results = []
    for name in names:
        print(f"[bench] === {name} ({'quick' if args.quick else 'full'}) ===", file=sys.stderr, flush=True)
        res = run_inline(name, args.quick) if args.inline else run_isolated(name, args.quick, timeout)
        state = "ok" if res["ok"] else f"FAILED: {res['error']}"
        print(f"[bench] === {name}: {state} in {res['seconds']}s ===", file=sys.stderr, flush=True)
        results.append(res)
    payload = build_payload(results, args.quick, started)
    path = write_results(payload, args.out)
    print(payload["table"])
    if payload["notes"]:
        print("\nNotes:\n" + payload["notes"])
    print(f"\n{'QUICK' if args.quick else 'Full'} run, {payload['seconds']:.0f}s, {os.cpu_count()} CPUs, "
          f"git {payload['git'] or '?'}; results in {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
          "(`make bench-compare` compares with the previous run)")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
