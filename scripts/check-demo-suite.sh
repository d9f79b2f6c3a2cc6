#!/bin/bash
# Check the bundled demo suite against its sim scenario.
#
#   scripts/check-demo-suite.sh [SUITE_DIR [SCENARIO_YAML [TASK_ID...]]]
#
# Defaults: fixtures/suites/demo and fixtures/sim/demo.yaml. Every run of a task happens in a fresh
# temp dir: the workspace is copied to a working dir, environment/setup.sh runs there, tests/ is
# copied to a tests dir, and HARNESS_WORKDIR / HARNESS_TESTS_DIR / HARNESS_LOGS_DIR (and
# HARNESS_SOLUTION_DIR for the oracle) point at those dirs. Scenario actions run one by one, each
# as its own fresh `bash -c` in the working dir (write_file / edit / read_file are done directly).
#
# Checks per task:
#   layout    instruction.md, task.toml values, Dockerfile, executable tests/test.sh and
#             solution/solve.sh; the instruction avoids the quirk words and the neutraliser phrases
#   nop       nothing done                               -> reward 0
#   oracle    solution/solve.sh                          -> reward 1
#   scenario  explore (read-only, exit 0), solve, verify (exit 0) -> reward 1
#   slip      explore only                               -> reward 0
#   exact-retry  `failing` exits non-zero in the starting workspace and again after explore;
#                explore, failing, failing, solve         -> reward 1
#   no-verify    explore, wrong                           -> reward 0
#                explore, wrong, verify, solve, verify    -> reward 1
#   env-loss     explore, split (separate calls)          -> reward 0
#                split chained in one call                -> reward 1
# and for the suite: scenario tasks == suite tasks, 8 tasks per quirk, distinct instructions.
# Prints "N tasks: all checks passed" or the failures; exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="${1:-$ROOT/fixtures/suites/demo}"
SCENARIO="${2:-$ROOT/fixtures/sim/demo.yaml}"
shift 2 2>/dev/null || shift $#

if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "PyYAML is missing; installing it with pip" >&2
  python3 -m pip install --quiet pyyaml >&2
fi

exec python3 - "$SUITE" "$SCENARIO" "$@" <<'PY'
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml

SUITE, SCENARIO, ONLY = sys.argv[1], sys.argv[2], set(sys.argv[3:])
QUIRKS = ["late-artifact", "exact-retry", "no-verify", "env-loss", "loop"]
PER_QUIRK = 8
FORBIDDEN = re.compile(r"early|retr(y|ie)|verif|persist|loop", re.I)
CMD_TIMEOUT = 30


class Run:
    """One fresh copy of a task: a working dir plus tests, logs and solution dirs."""

    def __init__(self, task_dir):
        self.task_dir = task_dir
        self.tmp = tempfile.mkdtemp(prefix="demo-check-")
        self.work = os.path.join(self.tmp, "work")
        self.tests = os.path.join(self.tmp, "tests")
        self.logs = os.path.join(self.tmp, "logs")
        self.solution = os.path.join(self.tmp, "solution")
        self.home = os.path.join(self.tmp, "home")
        ws = os.path.join(task_dir, "environment", "workspace")
        if os.path.isdir(ws):
            shutil.copytree(ws, self.work, symlinks=True)
        else:
            os.makedirs(self.work)
        shutil.copytree(os.path.join(task_dir, "tests"), self.tests)
        os.makedirs(self.logs)
        os.makedirs(self.home)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": self.home,
            "LANG": "C.UTF-8",
            "HARNESS_WORKDIR": self.work,
            "HARNESS_TESTS_DIR": self.tests,
            "HARNESS_LOGS_DIR": self.logs,
        }
        setup = os.path.join(task_dir, "environment", "setup.sh")
        if os.path.isfile(setup):
            rc, out = self.sh(f"bash {shq(setup)}")
            if rc != 0:
                raise RuntimeError(f"setup.sh failed ({rc}): {out[-300:]}")

    def sh(self, cmd, env=None):
        """Run cmd in a fresh bash in the working dir; return (exit code, output)."""
        try:
            p = subprocess.run(["bash", "-c", cmd], cwd=self.work, env=env or self.env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=CMD_TIMEOUT, start_new_session=True)
            return p.returncode, p.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired:
            return None, "<timed out>"

    def act(self, action):
        """Do one scenario action; return (ok, description)."""
        if "bash" in action:
            rc, out = self.sh(action["bash"])
            return rc == 0, f"bash {action['bash'][:60]!r} -> {rc}: {out.strip()[-200:]}"
        if "write_file" in action:
            path = os.path.join(self.work, action["write_file"]["path"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", newline="") as f:
                f.write(action["write_file"]["content"])
            return True, "write_file"
        if "edit" in action:
            e = action["edit"]
            path = os.path.join(self.work, e["path"])
            text = open(path).read()
            if text.count(e["old_text"]) != 1:
                return False, f"edit {e['path']}: old_text occurs {text.count(e['old_text'])} times"
            open(path, "w").write(text.replace(e["old_text"], e["new_text"]))
            return True, "edit"
        if "read_file" in action:
            return os.path.isfile(os.path.join(self.work, action["read_file"])), "read_file"
        return False, f"unknown action {action!r}"

    def oracle(self):
        shutil.copytree(os.path.join(self.task_dir, "solution"), self.solution)
        env = dict(self.env, HARNESS_SOLUTION_DIR=self.solution)
        return self.sh(f"{shq(os.path.join(self.solution, 'solve.sh'))}", env=env)

    def verify(self):
        """Run the verifier the way the runtime does; return (reward, output tail)."""
        vdir = os.path.join(self.logs, "verifier")
        shutil.rmtree(vdir, ignore_errors=True)
        rc, out = self.sh(shq(os.path.join(self.tests, "test.sh")))
        try:
            reward = open(os.path.join(vdir, "reward.txt")).read().strip()
        except OSError:
            reward = "<no reward.txt>"
        return reward, out.strip()[-300:]

    def snapshot(self):
        snap = {}
        for dirpath, dirnames, filenames in os.walk(self.work):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                digest = ""
                if os.path.isfile(p) and not os.path.islink(p):
                    digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
                snap[os.path.relpath(p, self.work)] = (st.st_mode, digest)
        return snap

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def shq(s):
    return "'" + s.replace("'", "'\\''") + "'"


def check_layout(tid, d, problems):
    def need(cond, what):
        if not cond:
            problems.append(f"layout: {what}")

    need(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", tid), "task id is not kebab-case")
    for rel in ["instruction.md", "task.toml", "environment/Dockerfile", "tests/test.sh",
                "solution/solve.sh"]:
        need(os.path.isfile(os.path.join(d, rel)), f"{rel} missing")
    for rel in ["tests/test.sh", "solution/solve.sh"]:
        p = os.path.join(d, rel)
        if os.path.isfile(p):
            need(os.access(p, os.X_OK), f"{rel} is not executable")
            need(open(p).readline().rstrip() == "#!/bin/bash", f"{rel} does not start with #!/bin/bash")
    try:
        cfg = tomllib.load(open(os.path.join(d, "task.toml"), "rb"))
        env = cfg.get("environment", {})
        need(cfg.get("agent", {}).get("timeout_sec") == 120, "[agent] timeout_sec != 120")
        need(cfg.get("verifier", {}).get("timeout_sec") == 30, "[verifier] timeout_sec != 30")
        need(env.get("workdir") == "/app", '[environment] workdir != "/app"')
        need("docker_image" not in env, "[environment] docker_image is set")
        need(env.get("cpus") == 1 and env.get("memory_mb") == 512, "[environment] cpus/memory_mb")
        need(env.get("network_mode") == "no-network", '[environment] network_mode != "no-network"')
        meta = cfg.get("metadata", {})
        need(meta.get("category") and meta.get("difficulty"), "[metadata] category/difficulty missing")
    except (OSError, tomllib.TOMLDecodeError) as e:
        problems.append(f"layout: task.toml unreadable: {e}")
    try:
        lines = open(os.path.join(d, "environment/Dockerfile")).read().splitlines()
        need(lines[:3] == ["FROM git-harness/base:bookworm", "WORKDIR /app", "COPY workspace/ /app/"],
             "Dockerfile does not start with FROM/WORKDIR/COPY")
    except OSError:
        pass


def check_task(tid, entry, quirk_phrases):
    d = os.path.join(SUITE, tid)
    problems = []
    check_layout(tid, d, problems)
    try:
        instruction = open(os.path.join(d, "instruction.md")).read()
    except OSError:
        instruction = ""
    m = FORBIDDEN.search(instruction)
    if m:
        problems.append(f"instruction contains the word {m.group(0)!r}")
    for phrase in quirk_phrases:
        if phrase.lower() in instruction.lower():
            problems.append(f"instruction contains the phrase {phrase!r}")
    if problems:
        return problems, 0

    quirk = entry.get("quirk")
    explore = [{"bash": c} for c in entry.get("explore", [])]
    verify = [{"bash": c} for c in entry.get("verify", [])]
    solve = entry.get("solve", [])
    runs = 0

    def run(name, steps, want, must_succeed=(), read_only=(), must_fail=()):
        """steps: list of (label, action). want: expected reward '0' or '1'."""
        nonlocal runs
        runs += 1
        r = Run(d)
        try:
            for label, action in steps:
                before = r.snapshot() if label in read_only else None
                if action == "ORACLE":
                    rc, out = r.oracle()
                    ok, desc = rc == 0, f"solve.sh -> {rc}: {out.strip()[-200:]}"
                else:
                    ok, desc = r.act(action)
                if label in must_succeed and not ok:
                    problems.append(f"{name}: {label} step failed: {desc}")
                if label in must_fail and ok:
                    problems.append(f"{name}: {label} step succeeded but must fail: {desc}")
                if before is not None and r.snapshot() != before:
                    problems.append(f"{name}: {label} step changed the workspace: {desc}")
            reward, tail = r.verify()
            if reward != want:
                problems.append(f"{name}: reward {reward}, want {want}; verifier said: {tail}")
        except Exception as e:  # noqa: BLE001
            problems.append(f"{name}: {type(e).__name__}: {e}")
        finally:
            r.close()

    ex = [("explore", a) for a in explore]
    sv = [("solve", a) for a in solve]
    vf = [("verify", a) for a in verify]
    run("nop", [], "0")
    run("oracle", [("oracle", "ORACLE")], "1", must_succeed={"oracle"})
    run("scenario", ex + sv + vf, "1", must_succeed={"explore", "verify"}, read_only={"explore"})
    run("slip", ex, "0")
    if not explore or not solve or not verify:
        problems.append("scenario: explore, solve and verify must all be given")
    if quirk not in QUIRKS:
        problems.append(f"scenario: unknown quirk {quirk!r}")
    if quirk == "exact-retry":
        if not entry.get("failing"):
            problems.append("exact-retry: no failing command")
        else:
            fa = ("failing", {"bash": entry["failing"]})
            run("failing-alone", [fa], "0", must_fail={"failing"})
            run("exact-retry", ex + [fa, fa] + sv + vf, "1", must_fail={"failing"},
                must_succeed={"verify"})
    if quirk == "no-verify":
        wrong = [("wrong", a) for a in entry.get("wrong", [])]
        if not wrong:
            problems.append("no-verify: no wrong attempt")
        run("wrong", ex + wrong, "0")
        run("wrong-then-solve", ex + wrong + vf + sv + vf, "1")
    if quirk == "env-loss":
        split = entry.get("split", [])
        if len(split) < 2 or not all("bash" in a for a in split):
            problems.append("env-loss: split must be two or more bash actions")
        else:
            run("split", ex + [("split", a) for a in split], "0")
            run("split-chained", [("split", {"bash": " && ".join(a["bash"] for a in split)})], "1",
                must_succeed={"split"})
    for k, only_for in (("failing", "exact-retry"), ("wrong", "no-verify"), ("split", "env-loss")):
        if k in entry and quirk != only_for:
            problems.append(f"scenario: {k} given for a {quirk} task")
    return problems, runs


def main():
    scenario = yaml.safe_load(open(SCENARIO))
    entries = scenario.get("tasks") or {}
    suite_ids = sorted(n for n in os.listdir(SUITE)
                       if os.path.isdir(os.path.join(SUITE, n)) and not n.startswith("."))
    failures = []
    for tid in sorted(set(entries) - set(suite_ids)):
        failures.append(f"{tid}: in the scenario but not in the suite")
    for tid in sorted(set(suite_ids) - set(entries)):
        failures.append(f"{tid}: in the suite but not in the scenario")
    if scenario.get("defaults") != {"p": 0.9, "slip": 0.03}:
        failures.append(f"scenario: defaults are {scenario.get('defaults')}")
    quirks = scenario.get("quirks") or {}
    if sorted(quirks) != sorted(QUIRKS):
        failures.append(f"scenario: quirks are {sorted(quirks)}")
    phrases = [p for q in quirks.values() for p in (q or {}).get("phrases", [])]
    if not ONLY:
        for q in QUIRKS:
            n = sum(1 for e in entries.values() if e.get("quirk") == q)
            if n != PER_QUIRK:
                failures.append(f"scenario: {n} tasks with quirk {q}, want {PER_QUIRK}")
    texts = {}
    for tid in suite_ids:
        try:
            texts[tid] = open(os.path.join(SUITE, tid, "instruction.md")).read().strip()
        except OSError:
            pass
    for a in texts:
        for b in texts:
            if a < b and (texts[a] in texts[b] or texts[b] in texts[a]):
                failures.append(f"{a}, {b}: one instruction contains the other")

    ids = [t for t in suite_ids if t in entries and (not ONLY or t in ONLY)]
    total_runs = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        results = dict(zip(ids, pool.map(lambda t: check_task(t, entries[t], phrases), ids)))
    for tid in ids:
        problems, runs = results[tid]
        total_runs += runs
        status = "ok  " if not problems else "FAIL"
        print(f"{status} {tid:28} {entries[tid].get('quirk', '-'):14} {runs} runs")
        failures += [f"{tid}: {p}" for p in problems]
    if failures:
        print()
        for f in failures:
            print(f"FAIL {f}")
        print(f"{len(ids)} tasks: {len(failures)} failure(s)")
        sys.exit(1)
    print(f"{len(ids)} tasks: all checks passed ({total_runs} runs)")


main()
PY
