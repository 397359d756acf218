"""``profile --beyond-context``: a sweep past the model's ``max_position_embeddings`` (the paper's Falcon grid
runs tin + tout to 4096 on a 2048-token model) is refused by default and runs, recorded, when asked for."""

import pytest

from llm_energy.cli.main import build_parser
from llm_energy.cli.profile import spec_from_args
from llm_energy.errors import UserError
from llm_energy.measure.profiler import Profiler


def _spec(*extra: str):
    args = build_parser().parse_args(["profile", "--model", "tiny-falcon", "--tin", "2040", "--tout", "16",
                                      "--device", "cpu", "--out", "unused", *extra])
    return spec_from_args(args)


def test_a_sweep_past_the_context_is_refused_unless_asked_for():
    spec = _spec()
    assert spec.beyond_context is False
    with pytest.raises(UserError, match=r"tin \+ tout = 2056 tokens exceeds .*max_position_embeddings=2048 "
                                        r"\(--beyond-context"):
        Profiler(spec).preflight()
    spec = _spec("--beyond-context")
    assert spec.beyond_context is True and spec.to_dict()["beyond_context"] is True
    src, batch, seq = Profiler(spec).preflight()
    assert (batch, seq) == (1, 2056) and src.max_positions == 2048


def test_the_flag_is_kept_in_the_stored_spec_and_keeps_the_sweep_id():
    from llm_energy.measure.spec import ProfileSpec, sweep_id

    plain, beyond = _spec(), _spec("--beyond-context")
    assert ProfileSpec.from_dict(beyond.to_dict()).beyond_context is True
    old = plain.to_dict()
    old.pop("beyond_context")  # a spec stored before the flag existed still reads
    assert ProfileSpec.from_dict(old).beyond_context is False
    assert sweep_id(plain) == sweep_id(beyond)  # a store resumes under the same id


def test_profile_takes_any_static_variant_in_one_spelling(tmp_path):
    from llm_energy.cli.main import main
    from llm_energy.trials.store import load_trials

    out = tmp_path / "s"
    assert main(["profile", "--model", "tiny-llama", "--backend", "static+cdt+fused", "--tin", "8", "--tout", "4",
                 "--device", "cpu", "--node-type", "cpu", "--idle-s", "0.2", "--min-window-s", "0", "--out", str(out),
                 "--no-live"]) == 0
    assert load_trials([str(out)])["backend"].unique().to_list() == ["static+fused+cdt"]
    assert main(["profile", "--model", "tiny-llama", "--backend", "static+nope", "--tin", "8", "--tout", "4",
                 "--device", "cpu", "--out", str(tmp_path / "t"), "--no-live"]) == 2
    assert not (tmp_path / "t").exists()
