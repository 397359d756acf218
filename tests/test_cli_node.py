"""The node-facing commands (llm_energy.cli.node): `devices` and `models`, one module, names and flags unchanged."""

import json

from llm_energy.cli import main
from llm_energy.cli.main import build_parser


def test_node_module_registers_devices_and_models():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"devices", "models"} <= set(sub.choices)
    assert sub.choices["models"].get_default("func").__module__ == "llm_energy.cli.node"
    assert sub.choices["devices"].get_default("func").__module__ == "llm_energy.cli.node"


def test_models_cli_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["preset"]: r for r in rows}
    assert {"tiny-llama", "llama-2-7b"} <= set(by_name)
    assert set(by_name["tiny-llama"]) == {"preset", "family", "params", "weights_bf16_gib", "kv_mib_per_1k_tokens",
                                          "needs_gib", "dtype_here", "fits_here", "description"}
    assert by_name["tiny-llama"]["fits_here"] is True and by_name["llama-2-70b"]["params"] > 6e10
