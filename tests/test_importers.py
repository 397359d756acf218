import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.errors import UserError
from llm_energy.trials.importers import import_csv, import_wilkins2024
from llm_energy.trials.store import open_store


def test_grid_import(grid_trials):
    df = grid_trials
    assert df.height == 7 * 81 - 1  # Llama-2-70b has 80 cells in the file
    assert set(df["tin"].unique().to_list()) == {2**k for k in range(3, 12)}
    assert (df["batch"] == 1).all() and not df["warmup"].any()
    assert df["trial_id"].n_unique() == df.height
    assert df.filter(pl.col("model") == "Llama-2-70b-chat-hf")["n_gpus"].unique().to_list() == [4]
    assert df["energy_source"].unique().to_list() == ["imported:nvml-counter"]


def test_sweeps_and_served_import(reference):
    w = reference / "wilkins2024"
    s = import_wilkins2024(w / "sweeps" / "all-input-stats.csv")
    assert s["warmup"].sum() > 0 and s.filter(pl.col("warmup"))["repeat"].unique().to_list() == [0]
    assert s["trial_id"].n_unique() == s.height
    assert set(s["node_type"].unique()) >= {"swing-a100", "palmetto-v100", "m1-pro"}
    label = dict(s.select("node_type", "energy_source").unique().iter_rows())
    assert label["swing-a100"] == label["palmetto-v100"] == "imported:nvml-counter"  # NVIDIA GPUs: NVML counter
    assert label["m1-pro"] == "imported:gpu-meter-unstated"  # the source does not say: neither do we
    v = import_wilkins2024(w / "served" / "vllm-Llama-2-7b-chat-hf-1.csv")
    assert (v["tout"] > 0).all()  # the defect column would make many negative
    big = import_wilkins2024(w / "served" / "vllm-Llama-2-70b-chat-hf-2.csv")
    raw = pl.read_csv(w / "served" / "vllm-Llama-2-70b-chat-hf-2.csv", has_header=False, infer_schema_length=100000)
    assert (raw[raw.columns[10]] < 0).sum() > 100 and (big["tout"] > 0).all()  # 2 GPUs: one more energy column


def test_generic_csv_with_and_without_header(tmp_path, capsys):
    p = tmp_path / "m.csv"
    p.write_text("in,out,mj,sec\n8,16,1500,0.5\n32,64,6000,1.9\n")
    df = import_csv(p, {"tin": "in", "tout": "out", "energy_j": "mj", "runtime_s": "sec", "energy_scale": "0.001"},
                    defaults={"model": "m"})
    assert df["energy_j"].to_list() == [1.5, 6.0] and df["model"].to_list() == ["m", "m"]
    q = tmp_path / "n.csv"
    q.write_text("8,16,1.5,0.5\n32,64,6.0,1.9\n")
    assert main(["import", "csv", str(q), "--no-header", "--map", "tin=0", "--map", "tout=1", "--map", "energy_j=2",
                 "--map", "runtime_s=3", "--out", str(tmp_path / "s")]) == 0
    assert open_store(tmp_path / "s").trials()["tout"].to_list() == [16, 64]


@pytest.mark.parametrize("content, mapping, needle", [
    ("in,out,e,t\n8,16,1,1\n", {"tin": "in", "tout": "nope", "energy_j": "e", "runtime_s": "t"}, "'nope'"),
    ("in,out,e,t\n8,x,1,1\n", {"tin": "in", "tout": "out", "energy_j": "e", "runtime_s": "t"}, "tout='x'"),
    ("in,out,e,t\n-8,16,1,1\n", {"tin": "in", "tout": "out", "energy_j": "e", "runtime_s": "t"}, "tin=-8"),
    ("in,out,e,t\n8,16,1,1\n", {"tin": "in", "tout": "out", "runtime_s": "t"}, "'energy_j' is required"),
])
def test_csv_bad_input(tmp_path, content, mapping, needle):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(UserError, match=needle):
        import_csv(p, mapping)


def test_unknown_file_kind(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a wilkins2024"):
        import_wilkins2024(p)


GOOD = "in,out,e,t,w,m\n8,16,1,1,yes,a\n16,32,2,2,0,b\n"
MAP = ["--map", "tin=in", "--map", "tout=out", "--map", "energy_j=e", "--map", "runtime_s=t"]


@pytest.mark.parametrize("content, extra, needles", [
    (GOOD, ["--map", "energy_scale=abc"], ["--map energy_scale='abc'", "not a number"]),
    (GOOD, ["--map", "energy_scale=-1"], ["--map energy_scale='-1'"]),
    (GOOD, ["--set", "batch=x"], ["{file}", "--set batch='x'"]),
    (GOOD, ["--set", "n_gpus=two"], ["{file}", "--set n_gpus='two'"]),
    (GOOD, ["--set", "bogus=1"], ["--set bogus", "unknown field", "fields: tin, tout"]),
    ("in,out,e,t,w\n8,16,1,1,true\n16,32,2,2,maybe\n", ["--map", "warmup=w"],
     ["{file}", "warmup='maybe'", "column 'w'", "data row 2"]),
    ("in,out,e,t\n8,16,1,1\n16,32,inf,2\n", [], ["{file}", "energy_j=inf", "column 'e'", "data row 2"]),
    ("in,out,e,t\n8,16,1,1\n16,32,2,-inf\n", [], ["runtime_s=-inf", "data row 2"]),
    ("in,out,e,t\n8.5,16,1,1\n", [], ["{file}", "tin=8.5", "data row 1", "not an integer"]),
    ("in,out,e,t\n8,16,1,1\n16,32,2,2\n", ["--set", "batch=2.5"], ["--set batch='2.5'", "not an integer"]),
    ("in,out,e,t,m\n8,16,1,1,a\n16,32,2,2,\n", ["--map", "model=m"], ["{file}", "model=(empty)", "data row 2"]),
    ("in,out,e,t,b\n8,16,1,1,1\n16,32,2,2,\n", ["--map", "batch=b"], ["batch=(empty)", "data row 2"]),
])
def test_csv_bad_values_are_one_line_errors_and_nothing_is_stored(tmp_path, capsys, content, extra, needles):
    p = tmp_path / "in.csv"
    p.write_text(content)
    rc = main(["import", "csv", str(p), *MAP, *extra, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n.format(file=p) in err, (n, err)
    assert not (tmp_path / "s").exists()


def test_csv_optional_fields_are_parsed_not_cast_blindly(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text(GOOD)
    df = import_csv(p, {"tin": "in", "tout": "out", "energy_j": "e", "runtime_s": "t", "warmup": "w", "model": "m"},
                    defaults={"n_gpus": "2", "batch": "4", "node_type": "h100"})
    assert df["warmup"].to_list() == [True, False] and df["model"].to_list() == ["a", "b"]
    assert df["batch"].to_list() == [4, 4] and df["n_gpus"].to_list() == [2, 2] and df["node_type"].to_list() == ["h100"] * 2
    assert df["tin"].to_list() == [8, 16] and df["tin"].dtype == pl.Int32
    with pytest.raises(UserError, match="also given by --map"):
        import_csv(p, {"tin": "in", "tout": "out", "energy_j": "e", "runtime_s": "t", "model": "m"}, defaults={"model": "x"})
