"""Imports that cannot mislabel (issue 15): each test fails on the importers before it."""

import polars as pl
import pytest

from llm_energy.cli import main
from llm_energy.errors import UserError
from llm_energy.trials.importers import import_csv, import_wilkins2024
from llm_energy.trials.store import open_store


@pytest.fixture(scope="module")
def served(reference):
    return reference / "wilkins2024" / "served"


@pytest.mark.parametrize("name, model, gpus", [
    ("vllm-Llama-2-7b-chat-hf-1.csv", "Llama-2-7b-chat-hf", 1),
    ("vllm-Llama-2-13b-chat-hf-1.csv", "Llama-2-13b-chat-hf", 1),
    ("vllm-Llama-2-70b-chat-hf-2.csv", "Llama-2-70b-chat-hf", 2),
    ("mii-Llama-2-7b-chat-hf-1.csv", "Llama-2-7b-chat-hf", 1),
])
def test_each_served_file_imports_into_its_own_deployment(served, name, model, gpus):
    notes: list[str] = []
    df = import_wilkins2024(served / name, notes=notes)
    assert df["model"].unique().to_list() == [model]  # the file's model column says Llama-2-7b-chat-hf in all
    assert df["n_gpus"].unique().to_list() == [gpus]
    assert df["backend"].unique().to_list() == ["served-mii" if name.startswith("mii") else "served-vllm"]
    assert df.height == (1000 if name.startswith("mii") else 3000) and (df["tout"] > 0).all()
    if model != "Llama-2-7b-chat-hf":
        assert len(notes) == 1 and "model column says Llama-2-7b-chat-hf" in notes[0] and model in notes[0]
    else:
        assert notes == []


def test_served_files_merge_into_three_deployments_not_one(served, tmp_path, capsys):
    files = [str(served / f) for f in ("vllm-Llama-2-7b-chat-hf-1.csv", "vllm-Llama-2-13b-chat-hf-1.csv",
                                       "vllm-Llama-2-70b-chat-hf-2.csv")]
    assert main(["import", "wilkins2024", *files, "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert err.count("model column says") == 2 and "using Llama-2-13b-chat-hf from the file name" in err
    t = open_store(tmp_path / "s").trials()
    assert sorted(t["model"].unique().to_list()) == ["Llama-2-13b-chat-hf", "Llama-2-70b-chat-hf", "Llama-2-7b-chat-hf"]


def test_served_model_and_node_type_as_stated(served, tmp_path, capsys):
    assert main(["import", "wilkins2024", str(served / "vllm-Llama-2-13b-chat-hf-1.csv"), "--model", "llama-2-13b",
                 "--node-type", "a100-80gb-sxm", "--out", str(tmp_path / "s")]) == 0
    t = open_store(tmp_path / "s").trials()
    assert t["model"].unique().to_list() == ["llama-2-13b"] and t["node_type"].unique().to_list() == ["a100-80gb-sxm"]
    assert "using llama-2-13b from --model" in capsys.readouterr().err
    grid = served.parent / "grid" / "all-stats-raw.csv"
    assert main(["import", "wilkins2024", str(grid), "--model", "x", "--out", str(tmp_path / "g")]) == 2
    assert "served files only" in capsys.readouterr().err


def test_70b_energy_is_the_sum_of_its_gpus_each_kept(served):
    f = served / "vllm-Llama-2-70b-chat-hf-2.csv"
    df = import_wilkins2024(f)
    raw = pl.read_csv(f, has_header=False, infer_schema_length=100000)
    raw = raw.filter(pl.col(raw.columns[1]).str.starts_with("start-inference"))
    want = (raw[raw.columns[3]] + raw[raw.columns[4]]).sum() / 1000
    assert df["energy_j"].sum() == pytest.approx(want, rel=1e-12)
    assert df["devices"][0].to_list() == ["gpu0", "gpu1"]
    per = df["device_energy_j"].list.sum().to_numpy()
    assert per == pytest.approx(df["energy_j"].to_numpy(), rel=1e-12)
    share = df["device_energy_j"].list.get(1).sum() / df["energy_j"].sum()
    assert 0.4 < share < 0.6  # the second GPU drew about half: an import of one column was 48.5% low


def test_mii_tokens_are_the_total_column(served):
    f = served / "mii-Llama-2-7b-chat-hf-1.csv"
    df = import_wilkins2024(f)
    raw = pl.read_csv(f, has_header=False, infer_schema_length=100000)
    raw = raw.filter(pl.col(raw.columns[1]).str.starts_with("start-inference"))
    assert df["tout"].to_list() == raw[raw.columns[10]].to_list()  # total tokens = generated length
    assert df["tin"].to_list() == raw[raw.columns[4]].to_list()


CSV = "in,out,g0,g1,ms\n8,16,1000,500,250\n32,64,4000,2000,900\n"


def test_csv_energy_columns_summed_and_kept_per_device(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(CSV)
    df = import_csv(p, {"tin": "in", "tout": "out", "energy_j": "g0+g1", "runtime_s": "ms",
                        "energy_scale": "0.001", "runtime_scale": "0.001"})
    assert df["energy_j"].to_list() == [1.5, 6.0]
    assert df["device_energy_j"].to_list() == [[1.0, 0.5], [4.0, 2.0]] and df["devices"][0].to_list() == ["g0", "g1"]
    assert df["runtime_s"].to_list() == [0.25, 0.9]
    with pytest.raises(UserError, match="column 'g2'"):
        import_csv(p, {"tin": "in", "tout": "out", "energy_j": "g0+g2", "runtime_s": "ms"})


def test_csv_one_list_syntax_and_scales_through_set(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(CSV)
    assert main(["import", "csv", str(p), "--map", "tin=in,tout=out,energy_j=g0+g1,runtime_s=ms",
                 "--set", "energy_scale=0.001,runtime_scale=0.001,model=m,node_type=h100", "--out", str(tmp_path / "s")]) == 0
    t = open_store(tmp_path / "s").trials().sort("tin")
    assert t["energy_j"].to_list() == [1.5, 6.0] and t["runtime_s"].to_list() == [0.25, 0.9]
    assert t["model"].unique().to_list() == ["m"] and t["node_type"].unique().to_list() == ["h100"]


@pytest.mark.parametrize("extra, needle", [
    (["--set", "runtime_scale=0"], "--set runtime_scale='0'"),
    (["--map", "energy_scale=x"], "--map energy_scale='x'"),
    (["--map", "tin=in,tin=out"], "tin given twice"),
    (["--map", "tin"], "expected FIELD=VALUE"),
])
def test_csv_bad_lists_and_scales_are_one_line(tmp_path, capsys, extra, needle):
    p = tmp_path / "m.csv"
    p.write_text(CSV)
    base = ["--map", "tout=out,energy_j=g0,runtime_s=ms"] + ([] if "tin" in " ".join(extra) else ["--map", "tin=in"])
    assert main(["import", "csv", str(p), *base, *extra, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_headerless_file_without_no_header_gets_a_hint(tmp_path, capsys):
    p = tmp_path / "n.csv"
    p.write_text("8,16,1.5,0.5\n32,64,6.0,1.9\n")
    assert main(["import", "csv", str(p), "--map", "tin=in,tout=out,energy_j=e,runtime_s=t",
                 "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "looks like data" in err and "--no-header" in err and len(err.splitlines()) == 1


def test_show_on_a_store_whose_meter_gave_no_energy(tmp_path, capsys, monkeypatch):
    from llm_energy.trials.importers import store_imported

    monkeypatch.setenv("COLUMNS", "250")
    p = tmp_path / "m.csv"
    p.write_text(CSV)
    df = import_csv(p, {"tin": "in", "tout": "out", "energy_j": "g0", "runtime_s": "ms"})
    df = df.with_columns(pl.when(pl.col("tin") == 8).then(None).otherwise(pl.col("energy_j")).alias("energy_j"))
    store_imported(df, tmp_path / "s")
    capsys.readouterr()
    assert main(["show", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "2 trials" in out and "4000.00" in out


def test_grid_actual_tokens_from_the_total_column(grid_trials):
    """Each grid row (model, nominal tin) shares a prompt: its length is the largest total - tout of the
    row (9..2134 for Llama-2, as the data's README says); tout_actual is the total minus it."""
    llama = grid_trials.filter(pl.col("model") == "Llama-2-7b-chat-hf")
    assert llama["tin_actual"].min() == 9 and llama["tin_actual"].max() == 2134
    assert llama.group_by("tin").agg(pl.col("tin_actual").n_unique())["tin_actual"].max() == 1
    r = grid_trials["tout_actual"] / grid_trials["tout"]
    assert r.min() >= 0.87 and r.max() == 1.0 and (r < 1).sum() > 20  # generation may stop after 0.9 x tout
