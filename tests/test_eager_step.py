"""``benchmarks.gpu.eager_step`` on CPU with tiny-llama (the script runs on the GPU machine): one row per
(length, loop) with its per-step figures; the ``cache`` backend's decode step runs the same aten ops at every
context length, fewer than ``generate()``'s, and none of them waits on the device (``generate()``'s do). The
``cache`` loops run the backend's SDPA kernels (cuDNN off), ``cache-cudnn`` the same loop with torch's default."""

import json
import sys

from benchmarks.gpu.eager_meters import METER_LOOPS
from benchmarks.gpu.eager_step import LOOPS, RUNTIME, main


def test_rows_per_length_and_loop_and_the_cache_step_does_not_grow(tmp_path, capsys):
    out = tmp_path / "eager.jsonl"
    assert main(["--device", "cpu", "--preset", "tiny-llama", "--lengths", "8,200", "--steps", "3",
                 "--prof-steps", "3", "--loops", ",".join(LOOPS), "--jsonl", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["tin"], r["loop"]) for r in rows] == [(n, loop) for n in (8, 200) for loop in LOOPS]
    by = {(r["tin"], r["loop"]): r for r in rows}
    for r in rows:
        assert r["device"] == "cpu" and r["steps"] == 3 and r["wall_ms"] > 0 and r["wall_ms_repeat"] > 0
        assert r["cpu_ms"] > 0 and r["sdpa_choice"] in ("FLASH_ATTENTION", "MATH") and r["top_kernels"] == []
        assert r["kernels"] == 0 and r["reserved_gb"] is None and all(r[k] == 0 for k in RUNTIME)
    assert len({r["tin_run"] for r in rows}) == len(rows)  # each run over key lengths of its own
    for loop in ("cache", "cache-cudnn", "cache+samplers"):
        assert by[(8, loop)]["aten_ops"] == by[(200, loop)]["aten_ops"] > 0  # independent of the context
        assert by[(8, loop)]["sync_ops"] == by[(200, loop)]["sync_ops"] == {}  # nothing waits on the device
        assert by[(8, loop)]["backend_ms"] > 0
    assert by[(200, "cache")]["aten_ops"] < by[(200, "generate")]["aten_ops"]
    assert by[(200, "generate")]["sync_ops"].get("aten::_local_scalar_dense", 0) >= 1  # its stopping check
    assert by[(200, "static-eager")]["sync_ops"] == {} and by[(200, "static-eager")]["backend_ms"] > 0
    assert by[(8, "cache+samplers")]["samplers"] and not by[(8, "cache")]["samplers"]
    assert [p["sampler"] for p in by[(8, "cache+samplers")]["pollers"]] == by[(8, "cache+samplers")]["samplers"]
    for n in (8, 200):  # cuDNN allowed where the model ran: only outside the eager backend's SDPA kernels
        assert {loop: by[(n, loop)]["cudnn_sdp"] for loop in LOOPS} == {
            "cache": False, "cache-cudnn": True, "generate": True, "static-eager": True, "cache+samplers": False}
        assert by[(n, "cache")]["aten_ops"] == by[(n, "cache-cudnn")]["aten_ops"]  # the same loop
    assert "cache tin   200: wall" in capsys.readouterr().out


def test_meter_loops_on_the_fake_nvml_at_the_first_length_only(tmp_path, capsys):
    """Each meter loop times the cache loop with its poller (NVML from the fake, in a spawned child for
    cache+nvml-proc), reads clocked while the loop runs and idle; the switch interval is restored."""
    out = tmp_path / "meters.jsonl"
    switch = sys.getswitchinterval()
    assert main(["--device", "cpu", "--preset", "tiny-llama", "--lengths", "8,40", "--steps", "3", "--prof-steps", "2",
                 "--loops", "cache," + ",".join(METER_LOOPS), "--nvml", "tests.fakes.fake_pynvml:RealtimeNvml",
                 "--jsonl", str(out)]) == 0
    assert sys.getswitchinterval() == switch
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["tin"], r["loop"]) for r in rows] == [(8, "cache"), *((8, m) for m in METER_LOOPS), (40, "cache")]
    by = {r["loop"]: r for r in rows}
    assert {m: by[m]["samplers"] for m in METER_LOOPS} == {
        "cache+none": [], "cache+null": ["NullSampler"], "cache+estimate": ["EstimateSampler"],
        "cache+nvml": ["NvmlSampler"], "cache+nvml-100ms": ["NvmlSampler"], "cache+nvml-proc": ["NvmlSampler"],
        "cache+switch1ms": ["NvmlSampler", "EstimateSampler"], "cache+samplers-proc": ["NvmlSampler", "EstimateSampler"]}
    assert len({r["tin_run"] for r in rows}) == len(rows)
    for m in METER_LOOPS:
        r = by[m]
        assert r["wall_ms"] > 0 and r["wall_ms_repeat"] > 0 and r["cpu_ms"] > 0 and r["cudnn_sdp"] is False
        assert "kernels" not in r and [p["sampler"] for p in r["pollers"]] == r["samplers"]
        assert r["switch_interval_s"] == (0.001 if m == "cache+switch1ms" else switch)
        for p in r["pollers"]:
            assert p["polls"] >= 1 and p["poll_errors"] == 0 and p["poll_cpu_us_per_poll"] > 0
            if m == "cache+samplers-proc":  # polled in children: their reads are not clocked
                assert p["where"] == "process" and p["read_us"]["read_power"]["n"] == 0
                continue
            assert p["read_us"]["read_power"]["n"] == p["polls"] and p["read_us"]["read_power"]["median_us"] > 0
            if p["sampler"] == "NvmlSampler":  # the counter polled too (as the profiler polls), idle reads clocked
                assert p["read_us"]["read_counters"]["n"] == p["polls"]
                assert p["read_us_idle"]["read_power"]["n"] == p["read_us_idle"]["read_counters"]["n"] == 40
    assert [p["period_s"] for p in by["cache+nvml-100ms"]["pollers"]] == [0.1]
    assert [p["period_s"] for p in by["cache+nvml"]["pollers"]] == [0.02]
    proc, = by["cache+nvml-proc"]["pollers"]
    assert proc["where"] == "process" and proc["child_imported_torch"] is False
    assert by["cache+nvml"]["pollers"][0]["where"] == "thread"
    assert "cache+nvml-proc tin     8: wall" in capsys.readouterr().out


def test_meter_loops_without_nvml_give_a_row_saying_so(tmp_path):
    out = tmp_path / "meters.jsonl"
    assert main(["--device", "cpu", "--preset", "tiny-llama", "--lengths", "8", "--steps", "2", "--prof-steps", "1",
                 "--loops", "cache+nvml,cache+nvml-proc,cache+none", "--nvml", "tests.fakes.fake_pynvml:NoDriverNvml",
                 "--jsonl", str(out)]) == 0
    rows = {r["loop"]: r for r in map(json.loads, out.read_text().splitlines())}
    for m in ("cache+nvml", "cache+nvml-proc"):
        assert rows[m]["skipped"].startswith("no NVML (NVMLError") and "wall_ms" not in rows[m]
        assert rows[m]["samplers"] == rows[m]["pollers"] == []
    assert "skipped" not in rows["cache+none"] and rows["cache+none"]["wall_ms"] > 0


def test_eager_gate_passes_flat_and_fails_growing_step(tmp_path):
    from benchmarks.gpu.eager_gate import main
    rows = [{"loop": "cache", "tin": 256, "wall_ms": 22.0, "wall_ms_repeat": 21.5},
            {"loop": "cache-cudnn", "tin": 2048, "wall_ms": 80.0, "wall_ms_repeat": 22.0},
            {"loop": "cache", "tin": 2048, "wall_ms": 23.0, "wall_ms_repeat": 24.0}]
    f = tmp_path / "eager_step.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(f)]) == 0
    assert main([str(f), "--loop", "cache-cudnn"]) == 1  # 80 ms cold at 2048: the per-length defect
    rows[2]["wall_ms_repeat"] = 30.0  # a repeated length 1.4x the short one: still growing
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(f)]) == 1
    assert main([str(tmp_path / "absent.jsonl")]) == 1


def test_process_pollers_poll_hz_counts_up_to_the_loops_end_not_their_stop():
    """Children stop one after another (each join waits for an interpreter's exit): the second child's polls
    while the first ends are not the loop's. At a 20 ms period poll_hz cannot pass 50 (+1 poll over 1 s)."""
    import time

    from benchmarks.gpu.eager_meters import ThreadPoller
    from llm_energy.measure.samplers.estimate import EstimateSampler
    from llm_energy.measure.samplers.process import in_processes

    p = ThreadPoller(in_processes([EstimateSampler("n", period_s=0.02) for _ in range(3)]))
    p.start()
    time.sleep(1.0)
    rows = p.stop()
    assert [r["where"] for r in rows] == ["process"] * 3
    assert all(40 < r["poll_hz"] <= 51.2 for r in rows), [r["poll_hz"] for r in rows]
