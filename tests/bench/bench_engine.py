"""The decision engine with 1,000,000 synthetic domains plus the shipped lists, against squidGuard.

Both get the same domain list (imported into our engine as the `pornography` category; a squidGuard
`dest`), the same URL-prefix list and the same deterministic URL mix. Figures:
  - decisions per second on one core: our Engine.decide over prebuilt Requests (the proxy already has
    a parsed request) vs squidGuard's stdin redirector (`URL client/fqdn ident method` lines);
  - resident memory the lists add, in a fresh subprocess: RSS after Engine.build from the compiled
    cache with every index page touched, minus RSS before it; also after a cold compile in-process;
  - startup from the compiled cache: Engine.build in a fresh process vs squidGuard to its first answer.
Rounds alternate ours / squidGuard; medians are reported.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.common import BENCH_DIR, ROOT, Row, alternate, row, rss_kib, say, stop, which
from tests.bench.workload import (
    GEN_VERSION,
    MIX_SHARES,
    MixUrl,
    shipped_domains,
    synthetic_domains,
    url_mix,
    url_prefixes,
    write_if_changed,
)

NAME = "engine"
WORK = BENCH_DIR / "engine"
POLICY = ROOT / "policies" / "aup.yaml"
N_DOMAINS = 1_000_000
N_PREFIXES = 10_000
LIST_CATEGORY = "pornography"
PREFIX_CATEGORY = "terrorism"
# Monday 2024-03-04 10:00 Europe/London: inside lessons, so every schedule-bound rule is live.
NOW = 1709546400.0


def _lists() -> tuple[list[str], list[str], list[str], bool]:
    """(domains, url prefixes, shipped domains, changed): written under WORK/lists/<category>/."""
    t0 = time.perf_counter()
    domains = synthetic_domains(N_DOMAINS)
    prefixes = url_prefixes(domains, N_PREFIXES)
    stamp = f"{GEN_VERSION}:{N_DOMAINS}:{N_PREFIXES}"
    changed = write_if_changed(WORK / "lists" / LIST_CATEGORY / "synthetic-1m.txt", domains, stamp)
    changed |= write_if_changed(WORK / "lists" / PREFIX_CATEGORY / "synthetic.urls", prefixes, stamp)
    say(f"engine: {len(domains):,} domains, {len(prefixes):,} URL prefixes "
        f"({'written' if changed else 'unchanged'}) in {time.perf_counter() - t0:.1f}s")
    return domains, prefixes, shipped_domains(ROOT / "policies" / "lists"), changed


def _requests(mix: list[MixUrl]) -> list[Any]:
    from esafety.policy.model import Request

    return [Request("GET", "http", u.host, 80, u.path, u.query, client_ip="10.0.0.1") for u in mix]


# -- ours ------------------------------------------------------------------------------------------


def _engine(cache: Path) -> Any:
    from esafety.policy.engine import Engine
    from esafety.policy.loader import load_policy

    return Engine.build(load_policy(POLICY), WORK / "lists", cache)


def _ours_round(engine: Any, reqs: list[Any]) -> dict[str, float]:
    from esafety.identity import Identity

    who = Identity(None, engine.policy.default_group)
    decide = engine.decide
    t0 = time.perf_counter()
    for r in reqs:
        decide(r, who, NOW)
    dt = time.perf_counter() - t0
    return {"decisions_per_s": len(reqs) / dt}


def _ours_blocked(engine: Any, reqs: list[Any]) -> int:
    from esafety.identity import Identity

    who = Identity(None, engine.policy.default_group)
    return sum(engine.decide(r, who, NOW).blocked for r in reqs)


def _probe(cache: Path) -> dict[str, float]:
    """Startup and memory, measured in a fresh interpreter (see _probe_main)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_engine", "--probe", str(cache)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"engine probe failed:\n{out.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    figures["process_s"] = time.perf_counter() - t0
    return figures


def _probe_main(cache: Path) -> None:
    import esafety.policy.engine  # noqa: F401  (imports are not the lists' cost)
    from esafety.policy.loader import load_policy

    policy = load_policy(POLICY)
    before = rss_kib(os.getpid())
    t0 = time.perf_counter()
    from esafety.policy.engine import Engine

    engine = Engine.build(policy, WORK / "lists", cache)
    build_s = time.perf_counter() - t0
    after_build = rss_kib(os.getpid())
    mm: mmap.mmap | None = engine.index._mm
    if mm is not None:  # the worst case: every page of the index resident
        sum(mm[i] for i in range(0, len(mm), mmap.PAGESIZE))
    from esafety.identity import Identity

    who = Identity(None, policy.default_group)
    for host in ("www.example.com", "pornhub.com", "10.1.2.3", "www.google.com"):  # fills the small rule caches
        engine.decide(_requests([MixUrl("probe", host, "/search", "q=x")])[0], who, NOW)
    after_touch = rss_kib(os.getpid())
    print(json.dumps({"build_s": build_s, "rss_before_mb": before / 1024, "rss_build_mb": (after_build - before) / 1024,
                      "rss_added_mb": (after_touch - before) / 1024,
                      "peak_added_mb": (rss_kib(os.getpid(), "VmHWM") - before) / 1024,
                      "domains": len(engine.index)}))


# -- squidGuard ------------------------------------------------------------------------------------


class SquidGuard:
    """squidGuard as Squid drives it: a redirector reading URL lines on stdin, answering one line each."""

    def __init__(self, binary: str, conf: Path):
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def ask(self, lines: list[bytes]) -> tuple[float, int]:
        """(seconds, blocked answers) for the lines, written by a thread while this one reads."""
        assert self.proc.stdin and self.proc.stdout
        data = b"".join(lines)
        stdin, stdout = self.proc.stdin, self.proc.stdout

        def feed() -> None:
            stdin.write(data)
            stdin.flush()

        t0 = time.perf_counter()
        th = threading.Thread(target=feed, daemon=True)
        th.start()
        blocked = 0
        readline = stdout.readline
        for _ in range(len(lines)):
            answer = readline()
            if not answer:
                raise RuntimeError("squidGuard closed its output (see var/bench/engine/squidguard/log)")
            if b"blocked.bench" in answer:
                blocked += 1
        dt = time.perf_counter() - t0
        th.join()
        return dt, blocked

    def close(self) -> None:
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop(self.proc)


def _sg_conf(root: Path, dests: dict[str, tuple[Path | None, Path | None]]) -> Path:
    """A squidGuard.conf blocking every dest (and IPv4 literals) for everyone."""
    db, logdir = root / "db", root / "log"
    logdir.mkdir(parents=True, exist_ok=True)
    parts = [f"dbhome {db}", f"logdir {logdir}", ""]
    for name, (domains, urls) in dests.items():
        dest_dir = db / name
        dest_dir.mkdir(parents=True, exist_ok=True)
        parts.append(f"dest {name} {{")
        if domains:
            target = dest_dir / "domains"
            if not target.exists() or target.stat().st_mtime < domains.stat().st_mtime:
                shutil.copyfile(domains, target)
            parts.append(f"    domainlist {name}/domains")
        if urls:
            target = dest_dir / "urls"
            if not target.exists() or target.stat().st_mtime < urls.stat().st_mtime:
                shutil.copyfile(urls, target)
            parts.append(f"    urllist {name}/urls")
        parts.append("}")
    passes = " ".join(f"!{n}" for n in dests)
    parts += ["acl {", "    default {", f"        pass {passes} !in-addr all",
              "        redirect http://blocked.bench/?url=%u", "    }", "}", ""]
    conf = root / "squidGuard.conf"
    conf.write_text("\n".join(parts))
    return conf


def _sg_setup(binary: str, shipped: list[str], rebuild: bool) -> tuple[Path, Path, float | None]:
    """(conf with the bench lists, conf with a one-entry list, seconds `squidGuard -C all` took or None)."""
    root = WORK / "squidguard"
    shipped_file = root / "shipped.txt"
    write_if_changed(shipped_file, sorted(set(shipped)), f"{GEN_VERSION}:{len(shipped)}")
    conf = _sg_conf(root, {
        "bench": (WORK / "lists" / LIST_CATEGORY / "synthetic-1m.txt",
                  WORK / "lists" / PREFIX_CATEGORY / "synthetic.urls"),
        "shipped": (shipped_file, None),
    })
    tiny_src = root / "tiny.txt"
    write_if_changed(tiny_src, ["tiny.example"], GEN_VERSION)
    tiny_conf = _sg_conf(root / "tiny", {"tiny": (tiny_src, None)})
    build_s = None
    db = root / "db" / "bench" / "domains.db"
    if rebuild or not db.exists():
        for f in (root / "db").rglob("*.db"):
            f.unlink()
        say("engine: squidGuard -C all (Berkeley DB for 1M domains)")
        t0 = time.perf_counter()
        subprocess.run([binary, "-c", str(conf), "-C", "all"], check=True, capture_output=True, timeout=900)
        build_s = time.perf_counter() - t0
        subprocess.run([binary, "-c", str(tiny_conf), "-C", "all"], check=True, capture_output=True, timeout=60)
    return conf, tiny_conf, build_s


def _sg_startup(binary: str, conf: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    sg = SquidGuard(binary, conf)
    try:
        sg.ask([b"http://warmup.example/ 127.0.0.1/- - GET\n"])
        return {"startup_s": time.perf_counter() - t0}
    finally:
        sg.close()


# -- run -------------------------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    rows: list[Row] = []
    notes: list[str] = []
    bench = "engine (1M domains)"
    n_mix = 100_000 if quick else 300_000
    rounds = 3 if quick else 5
    domains, prefixes, shipped, changed = _lists()
    mix = url_mix(n_mix, domains, prefixes, shipped)
    del domains
    reqs = _requests(mix)
    lines = [f"{u.url} 10.0.0.1/- - GET\n".encode() for u in mix]
    cache = WORK / "cache"
    if changed and cache.exists():
        shutil.rmtree(cache)

    # A cold compile (no cache) in a fresh process: what an import of new lists costs the proxy.
    cold = None
    if not quick or not any(cache.glob("*.idx")):
        cold_cache = WORK / "cold-cache"
        shutil.rmtree(cold_cache, ignore_errors=True)
        say("engine: cold compile of the lists in a fresh process")
        cold = _probe(cold_cache)
        shutil.rmtree(cold_cache, ignore_errors=True)
    engine = _engine(cache)
    say(f"engine: index holds {len(engine.index):,} domains")

    sg_bin = which("squidGuard")
    sg: SquidGuard | None = None
    sg_conf = sg_tiny = None
    sg_build = None
    if sg_bin:
        sg_conf, sg_tiny, sg_build = _sg_setup(sg_bin, shipped, rebuild=changed or not quick)
        sg = SquidGuard(sg_bin, sg_conf)
        sg.ask(lines[:1000])  # opens the databases, warms the page cache
    else:
        notes.append("squidGuard not installed: peer figures missing (run scripts/install-system-deps.sh bench)")
    try:
        blocked_ours = _ours_blocked(engine, reqs)
        blocked_sg = 0

        def sg_round() -> dict[str, float]:
            nonlocal blocked_sg
            assert sg is not None
            dt, blocked_sg = sg.ask(lines)
            return {"decisions_per_s": len(lines) / dt}

        contenders = {"esafety": lambda: _ours_round(engine, reqs)}
        if sg:
            contenders["squidGuard"] = sg_round
        thr = alternate(rounds, contenders, log=lambda m: say(f"engine: {m}"))
        sg_rss = rss_kib(sg.proc.pid) / 1024 if sg else None
    finally:
        if sg:
            sg.close()

    # Startup and memory: fresh processes, alternating.
    def ours_probe() -> dict[str, float]:
        return _probe(cache)

    probes: dict[str, Any] = {"esafety": ours_probe}
    if sg_bin and sg_conf:
        probes["squidGuard"] = lambda: _sg_startup(sg_bin, sg_conf)
    start = alternate(2 if quick else 3, probes, log=lambda m: say(f"engine: {m}"))
    sg_base = None
    if sg_bin and sg_tiny:
        base = SquidGuard(sg_bin, sg_tiny)
        try:
            base.ask(lines[:1000])
            sg_base = rss_kib(base.proc.pid) / 1024
        finally:
            base.close()

    ours, peer = thr["esafety"], thr.get("squidGuard", {})
    rows.append(row(bench, "decisions/s, one core", ours["decisions_per_s"], "decisions/s",
                    peer=peer.get("decisions_per_s"), peer_name="squidGuard", goal=(">=", 300_000)))
    o = start["esafety"]
    sg_added = sg_rss - sg_base if sg_rss is not None and sg_base is not None else None
    rows.append(row(bench, "RSS added by lists (cache, all pages touched)", o["rss_added_mb"], "MB",
                    peer=sg_added, peer_name="squidGuard", goal=("<=", 120), better="lower",
                    note="squidGuard: RSS with the 1M list minus RSS with a one-entry list"))
    if cold:
        rows.append(row(bench, "peak RSS added by a cold compile (no cache)", cold["peak_added_mb"], "MB",
                        goal=("<=", 120), better="lower",
                        note=f"{cold['rss_added_mb']:.0f} MB still resident after it"))
        rows.append(row(bench, "compile 1M-domain lists (cold)", cold["build_s"], "s",
                        peer=sg_build, peer_name="squidGuard -C all", better="lower"))
    rows.append(row(bench, "startup from compiled cache", o["build_s"], "s",
                    peer=start.get("squidGuard", {}).get("startup_s"), peer_name="squidGuard", goal=("<", 2),
                    better="lower", note=f"fresh interpreter incl. imports: {o['process_s']:.2f} s"))
    shares = ", ".join(f"{k} {v:.0%}" for k, v in MIX_SHARES)
    notes.append(f"URL mix: {n_mix:,} URLs ({shares}); blocked by esafety {blocked_ours:,}/{len(reqs):,}, "
                 f"by squidGuard {blocked_sg:,}/{len(lines):,} (esafety also blocks IPv6 literals; both block the "
                 "listed domains, their subdomains and the URL prefixes)")
    notes.append("esafety figures exclude URL parsing (the proxy has already parsed the request); squidGuard's "
                 f"include its line parsing and a pipe write per answer, as Squid drives it. {rounds} rounds.")
    return {"rows": rows, "notes": notes, "raw": {"throughput": thr, "startup": start, "cold": cold,
                                                   "squidguard_rss_mb": sg_rss, "squidguard_base_rss_mb": sg_base}}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        _probe_main(Path(sys.argv[2]))
    else:
        print(json.dumps(run("--quick" in sys.argv), indent=1, default=str))
