import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.errors import UserError
from llm_energy.importers import import_csv, import_wilkins2024
from llm_energy.store import open_store


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
