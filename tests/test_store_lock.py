"""One writer at a time (issue 16): every store writer (profile, import, compact, anything appending
through TrialStore) takes an advisory lock; a second writing process is refused at once naming the
holder's pid (or waits with --wait); nothing is lost. Imports are identified by content, not name."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llm_energy.cli import main
from llm_energy.trials.store import TrialStore, open_store
from tests.test_store import make_record

REPO = Path(__file__).resolve().parents[1]
HOLD = "from llm_energy.trials.store import TrialStore; import sys, time; s = TrialStore(sys.argv[1]); " \
       "s.append_trials([]); s.register_sweep('held', __import__('llm_energy.trials.schema', fromlist=['x']).SweepInfo(" \
       "'held', 'm', 'cache', 'float32', 'cpu', 0)); print('held', flush=True); time.sleep(float(sys.argv[2]))"


def holder(store: Path, seconds: float) -> subprocess.Popen:
    """Another process writing to ``store`` (it registers a sweep, then stays a while)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(store), str(seconds)], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "held", p.stderr.read()
    return p


@pytest.fixture
def store(tmp_path):
    st = TrialStore(tmp_path / "s")
    st.append_trials([make_record(0)])
    getattr(st, "close", lambda: None)()  # (the code before the lock had no close)
    return tmp_path / "s"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [x for x in err.splitlines() if "error" in x]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_second_profile_is_refused_at_once_naming_the_holder(store, capsys):
    p = holder(store, 60)
    try:
        t0 = time.monotonic()
        rc = main(["profile", "--model", "tiny-llama", "--tin", "8", "--tout", "4", "--repeats", "1", "--warmups", "0",
                   "--device", "cpu", "--idle-s", "0.1", "--min-window-s", "0.05", "--out", str(store), "--no-live"])
        took = time.monotonic() - t0
        err = one_line_error(capsys)
        assert rc == 2 and f"store in use by pid {p.pid}" in err and "--wait" in err
        assert took < 5  # refused before the model loads or any idle is measured
        assert open_store(store).trials().height == 1  # nothing written, nothing lost
    finally:
        p.kill()
        p.wait()
    # the holder is gone (SIGKILL: the kernel dropped its lock): the sweep runs
    assert main(["profile", "--model", "tiny-llama", "--tin", "8", "--tout", "4", "--repeats", "1", "--warmups", "0",
                 "--device", "cpu", "--idle-s", "0.1", "--min-window-s", "0.05", "--out", str(store), "--no-live"]) == 0
    assert open_store(store).trials().height == 2


def test_import_and_compact_are_refused_while_another_process_writes(store, tmp_path, capsys):
    csv = tmp_path / "run.csv"
    csv.write_text("in,out,e,t\n8,8,3.0,0.1\n16,8,4.0,0.2\n")
    p = holder(store, 60)
    try:
        rc = main(["import", "csv", str(csv), "--map", "tin=in", "--map", "tout=out", "--map", "energy_j=e",
                   "--map", "runtime_s=t", "--out", str(store)])
        assert rc == 2 and f"pid {p.pid}" in one_line_error(capsys)
        assert main(["compact", str(store)]) == 2 and f"pid {p.pid}" in one_line_error(capsys)
        assert open_store(store).trials().height == 1
    finally:
        p.kill()
        p.wait()


def test_compact_waits_for_the_writer_with_wait(store, capsys):
    p = holder(store, 1.5)
    t0 = time.monotonic()
    assert main(["compact", str(store), "--wait"]) == 0
    assert time.monotonic() - t0 > 0.8 and p.wait() == 0
    st = open_store(store)
    assert st.trials().height == 1 and "held" in st.sweeps()  # the holder's sweep record survived compaction


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from llm_energy.errors import UserError
    from llm_energy.trials.schema import SweepInfo
    from llm_energy.trials.store import TrialStore
    from tests.test_store import make_record
    root, me = Path(sys.argv[1]), sys.argv[2]
    st = TrialStore(root)  # both open the store, then write at the same moment
    while not (root / "go").exists():
        time.sleep(0.005)
    try:
        st.register_sweep(me, SweepInfo(me, "tiny-llama", "cache", "float32", "cpu", 0))
        st.append_trials([make_record(i, sweep=me) for i in range(20)])
        print("ok")
    except UserError as e:
        print("refused:", e)
""")


def test_two_writers_at_once_one_refused_or_both_serialised_nothing_lost(store):
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(store), f"w{i}"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    time.sleep(1.5)  # both have opened the store (and read its manifest)
    (store / "go").write_text("")
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    st = open_store(store)
    sweeps, trials = st.sweeps(), st.trials()
    ok = [f"w{i}" for i, o in enumerate(outs) if o == "ok"]
    assert ok, outs
    for i, o in enumerate(outs):
        assert o == "ok" or (o.startswith("refused:") and f"pid {procs[1 - i].pid}" in o), outs
    for w in ok:  # every writer that said ok has its sweep record and all its trials
        assert w in sweeps and trials.filter(trials["sweep_id"] == w).height == 20, (w, outs, list(sweeps))
    assert trials["trial_id"].n_unique() == trials.height


def test_a_killed_writer_leaves_no_stale_lock(store):
    p = holder(store, 60)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    st = TrialStore(store)
    assert st.append_trials([make_record(5)]) == 1


def test_imports_are_identified_by_content_not_file_name(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "run.csv", tmp_path / "b" / "run.csv"
    a.write_text("in,out,e,t\n8,8,3.0,0.1\n16,8,4.0,0.2\n")
    b.write_text("in,out,e,t\n8,8,3.5,0.11\n16,8,4.4,0.21\n")  # same name, other measurements
    mapping = ["--map", "tin=in", "--map", "tout=out", "--map", "energy_j=e", "--map", "runtime_s=t"]
    out = str(tmp_path / "s")
    for f, new in ((a, 2), (b, 2), (a, 0)):
        capsys.readouterr()
        assert main(["import", "csv", str(f), *mapping, "--out", out]) == 0
        assert f"{new} new" in capsys.readouterr().out
    (tmp_path / "c.csv").write_bytes(a.read_bytes())  # the same file under another name adds nothing
    assert main(["import", "csv", str(tmp_path / "c.csv"), *mapping, "--out", out]) == 0
    assert "0 new" in capsys.readouterr().out
    df = open_store(out).trials()
    assert df.height == 4 and sorted(df["energy_j"].to_list()) == [3.0, 3.5, 4.0, 4.4]


def test_import_waits_with_wait_and_loses_nothing(store, tmp_path, capsys):
    csv = tmp_path / "run.csv"
    csv.write_text("in,out,e,t\n8,8,3.0,0.1\n16,8,4.0,0.2\n")
    p = holder(store, 1.5)
    t0 = time.monotonic()
    assert main(["import", "csv", str(csv), "--map", "tin=in", "--map", "tout=out", "--map", "energy_j=e",
                 "--map", "runtime_s=t", "--out", str(store), "--wait"]) == 0
    assert time.monotonic() - t0 > 0.8 and p.wait() == 0 and "2 new" in capsys.readouterr().out
    st = open_store(store)
    assert st.trials().height == 3 and "held" in st.sweeps()  # the holder's record and the import's trials
