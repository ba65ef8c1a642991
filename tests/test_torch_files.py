"""rsmoe.io.torch_files: the one torch-file reader and the one state-dict extraction rule."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rsmoe.errors import CheckpointError
from rsmoe.io.torch_files import check_keys, compare_keys, extract_state_dict, read_state_dict, read_torch_file


class Logger:
    """Stands for a logging object a training framework pickles (refused by weights_only)."""

    def __init__(self):
        self.history = [1.0, 2.0]


def _tensors():
    return {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(2)}


@pytest.mark.parametrize("wrap", [
    lambda t: t,
    lambda t: {"state_dict": t, "meta": {"iter": 3}},
    lambda t: {"model": {"state_dict": t}, "epoch": 7},
    lambda t: {"module": {f"module.{k}": v for k, v in t.items()}},
    lambda t: {"teacher": {f"backbone.{k}": v for k, v in t.items()} | {"dino_head.w": torch.zeros(1)}},
], ids=["bare", "mmengine", "nested", "ddp", "dino-teacher"])
def test_every_wrapper_gives_the_same_state_dict(tmp_path, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(_tensors()) | {"logger": Logger()}, path)  # a pickled logging object beside the tensors
    state = read_state_dict(path, prefix="backbone.")
    assert set(state) == {"a.weight", "a.bias"}
    assert torch.equal(state["a.weight"], _tensors()["a.weight"])


def test_placeholders_run_no_code_and_keep_the_tensors(tmp_path):
    path = tmp_path / "with_logger.pth"
    torch.save({"state_dict": _tensors(), "message_hub": Logger()}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    loaded = read_torch_file(path)
    assert type(loaded["message_hub"]).__name__ == "Logger" and not isinstance(loaded["message_hub"], Logger)
    assert torch.equal(extract_state_dict(loaded, path)["a.bias"], torch.ones(2))


def test_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="weights not found: .*nope.pth"):
        read_torch_file(tmp_path / "nope.pth", "weights")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file\n" * 3)
    with pytest.raises(CheckpointError) as info:
        read_torch_file(tmp_path / "junk.pth")
    assert "\n" not in str(info.value) and "junk.pth" in str(info.value)
    with pytest.raises(CheckpointError, match=r"no tensors found \(top-level keys: epoch, args"):
        extract_state_dict({"epoch": 3, "args": "x"}, "f.pth")
    with pytest.raises(CheckpointError, match="expected a state dict, got list"):
        extract_state_dict([1, 2], "f.pth")


def test_key_report_names_both_shapes():
    tensors = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "extra": torch.zeros(1)}
    report = compare_keys(tensors, {"a": (2, 4), "b": (4,), "c": (1,)})
    assert report.mismatched == ["a: checkpoint (2, 3) vs model (2, 4)"]
    assert report.missing == ["c"] and report.unexpected == ["extra"]
    with pytest.raises(CheckpointError, match=r"^f: shape mismatch: a: .*; missing 1 key\(s\): c; unexpected 1 key"):
        check_keys("f", tensors, {"a": (2, 4), "b": (4,), "c": (1,)})
    check_keys("f", {"b": torch.zeros(4)}, {"b": (4,)})  # exact match: no error


def test_importing_the_readers_and_the_convert_cli_does_not_import_torch():
    code = ("import sys, rsmoe.io, rsmoe.convert.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from rsmoe.convert.cli import add_convert_arguments, run_convert_from_args")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_safetensors_with_metadata(tmp_path):
    from safetensors.torch import save_file

    from rsmoe.io.torch_files import read_safetensors

    path = tmp_path / "w.safetensors"
    save_file(_tensors(), str(path), metadata={"format": "rsmoe-test-v1", "note": "x"})
    tensors, meta = read_safetensors(path, format_tag="rsmoe-test-v1")
    assert torch.equal(tensors["a.weight"], _tensors()["a.weight"]) and meta["note"] == "x"
    with pytest.raises(CheckpointError, match=r"not a DOFA file \(metadata format 'rsmoe-test-v1', expected 'dofa'"):
        read_safetensors(path, "DOFA", format_tag="dofa")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="bad.safetensors: not a readable safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")
