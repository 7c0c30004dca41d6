import os


def test_offline_variables_are_set_for_the_whole_session():
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert os.environ[name] == "1"
    assert "distill-plugins-tests-" in os.environ["HF_HOME"]


def test_hub_download_fails_offline():
    import pytest
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    with pytest.raises((OfflineModeIsEnabled, LocalEntryNotFoundError, OSError)):
        hf_hub_download("gpt2", "config.json")


# `make test-portable` / `make test-matrix` rerun the suite under these settings; each must really change
# the kernels it names, or the reruns prove nothing.
PROBE = r"""
import torch
x, w = torch.randn(4, 32, 32, 32), torch.randn(32, 32, 3, 3)
torch.nn.functional.conv2d(x, w, padding=1)  # large enough for oneDNN
print("capability", torch.backends.cpu.get_cpu_capability(), "threads", torch.get_num_threads())
"""


def portable_settings() -> list[str]:
    import re
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text(encoding="utf-8")
    value = re.search(r"^PORTABLE_SETTINGS := ((?:.*\\\n)*.*)$", makefile, re.MULTILINE).group(1)
    return value.replace("\\\n", " ").split()


def test_portable_settings_are_the_five_kernel_settings():
    assert portable_settings() == ["ATEN_CPU_CAPABILITY=default", "ATEN_CPU_CAPABILITY=avx2", "ONEDNN_MAX_CPU_ISA=SSE41",
                                   "ONEDNN_MAX_CPU_ISA=AVX2", "OMP_NUM_THREADS=1"]


def test_each_portable_setting_changes_the_kernels():
    import subprocess
    import sys

    # the three variables are read independently at start-up, so two processes cover the five settings
    settings = portable_settings()
    groups = [dict(s.split("=") for s in settings[i::2]) for i in range(2)]
    assert sorted(f"{k}={v}" for g in groups for k, v in g.items()) == sorted(settings)
    probes = [subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, **group, "ONEDNN_VERBOSE": "1"}) for group in groups]
    for group, process in zip(groups, probes):
        out = process.communicate(timeout=300)[0]
        assert process.returncode == 0, group
        isa = next(line for line in out.splitlines() if line.startswith("onednn_verbose") and ",isa:" in line)
        _, capability, _, threads = out.splitlines()[-1].split()
        for name, value in group.items():
            if name == "ATEN_CPU_CAPABILITY":
                # torch falls back to DEFAULT on a CPU without the requested instructions
                assert capability in ({"default": "DEFAULT", "avx2": "AVX2"}[value], "DEFAULT"), group
            elif name == "ONEDNN_MAX_CPU_ISA":
                allowed = {"SSE41": ("SSE4.1",), "AVX2": ("AVX2", "AVX", "SSE4.1")}[value]
                assert any(f"isa:Intel {a}" in isa or f"isa:{a}" in isa for a in allowed), (group, isa)
            else:
                assert (name, threads) == ("OMP_NUM_THREADS", "1"), group
