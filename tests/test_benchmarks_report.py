"""The benchmark tooling itself: ratios, report tables/targets/plots, peak-memory measurement, gpu_check.sh
syntax. Synthetic results, so these run in a second and can fail."""
import json
import shutil
import subprocess

import pytest
import torch

from benchmarks import report
from benchmarks.memory import peak_memory
from benchmarks.results import add_ratios, case_key


def result(provider, median, *, op="toy_op", shape=(64, 32), mode="forward", dtype="float32", **extra):
    info = {"op": op, "shape": list(shape), "dtype": dtype, "mode": mode, "provider": provider,
            "device": "cpu", "bytes": 1_000_000, "copy_gbps": 10.0, **extra}
    if info["bytes"]:
        info["achieved_gbps"] = round(info["bytes"] / median / 1e9, 3)
    return {"name": f"test[{provider}]", "extra_info": info,
            "stats": {"median": median, "min": median * 0.9, "rounds": 5}}


def write(tmp_path, name, benchmarks):
    path = tmp_path / name
    path.write_text(json.dumps({"benchmarks": benchmarks, "datetime": "2026-01-01T00:00:00",
                                "machine_info": {"gencore": {"cpu": "Test CPU", "logical_cpus": 2}}}))
    return str(path)


def test_ratios_compare_only_the_same_case():
    rs = [result("eager", 4e-3), result("compile", 2e-3), result("gencore-cpu", 1e-3),
          result("eager", 8e-3, shape=(128, 32)), result("gencore-cpu", 4e-3, shape=(128, 32)),
          result("eager", 1e-3, negative_slope=0.0), result("gencore-cpu", 2e-3, negative_slope=0.0)]
    add_ratios(rs)
    assert rs[2]["extra_info"]["speedup_vs_eager"] == 4.0
    assert rs[2]["extra_info"]["speedup_vs_compile"] == 2.0
    assert rs[4]["extra_info"]["speedup_vs_eager"] == 2.0
    assert "speedup_vs_compile" not in rs[4]["extra_info"]  # no compile result for that shape
    assert rs[6]["extra_info"]["speedup_vs_eager"] == 0.5  # the variant is its own case
    assert rs[2]["extra_info"]["copy_fraction"] == pytest.approx(0.1)
    # eager 4 ms; 1 MB at 10 GB/s takes 0.1 ms: an op moving those bytes at copy bandwidth is 40x eager
    assert rs[2]["extra_info"]["speedup_vs_eager_at_copy_bw"] == pytest.approx(40.0)
    assert rs[4]["extra_info"]["speedup_vs_eager_at_copy_bw"] == pytest.approx(80.0)
    assert case_key(rs[0]["extra_info"]) == case_key(rs[2]["extra_info"])
    assert case_key(rs[0]["extra_info"]) != case_key(rs[5]["extra_info"])


def test_report_tables_targets_and_plots(tmp_path):
    targets = {"min_speedup_vs_eager": 3.0, "min_speedup_vs_compile": 2.5}
    a = write(tmp_path, "a.json", [
        result("eager", 4e-3), result("compile", 2e-3), result("gencore-cpu", 1e-3, targets=targets,
                                                               target_provider="gencore-cpu"),
        result("gencore-torch", 4.1e-3),
        {"name": "foreign", "extra_info": {}, "stats": {"median": 1.0, "min": 1.0, "rounds": 1}},
    ])
    b = write(tmp_path, "b.json", [
        result("eager", 3e-2, op="train_step_toy", mode="train-step", bytes=None, peak_mem_bytes=200 << 20),
        result("fused", 2e-2, op="train_step_toy", mode="train-step", bytes=None, peak_mem_bytes=150 << 20),
    ])
    out = tmp_path / "out"
    assert report.main([a, b, "--out", str(out), "--quiet"]) == 0
    md = (out / "benchmark_report.md").read_text()
    assert "## toy_op (cpu)" in md and "## train_step_toy (cpu)" in md
    assert "| 64×32 | float32 | forward | 4 ms | 2 ms | 1 ms | 4.1 ms | 4.00× / 2.00× | 2.00× |" in md
    assert "Test CPU" in md
    assert "| met |" in md and "missed: 2.00 vs ≥ 2.5 (20% short)" in md
    assert "| peak_mem | 200.0 | 150.0 | 0.75× |" in md  # memory table: MiB and the ratio to eager
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "img" / "toy_op_cpu.png").stat().st_size > 1000
    assert "![toy_op on cpu: speedup over eager](img/toy_op_cpu.png)" in md


def test_report_builtin_issue_targets(tmp_path):
    rs = [result("eager", 10e-3, op="reparameterize_kl", shape=(128, 128), mode="forward+backward"),
          result("gencore-cpu", 5e-3, op="reparameterize_kl", shape=(128, 128), mode="forward+backward")]
    path = write(tmp_path, "r.json", rs)
    assert report.main([path, "--out", str(tmp_path / "o"), "--quiet", "--no-plots"]) == 0
    md = (tmp_path / "o" / "benchmark_report.md").read_text()
    assert "min_speedup_vs_eager | 3 | missed: 2.00 vs ≥ 3 (33% short); 100.00× at copy bandwidth" in md
    assert "×eager at copy bw |" in md and "| 100.00× |" in md


def test_issue_targets_skip_the_channels_last_cases(tmp_path):
    bn = dict(op="batch_norm_leaky_relu", shape=(64, 512, 8, 8), mode="forward+backward", negative_slope=0.2)
    rs = [result("eager", 10e-3, **bn), result("compile", 5e-3, **bn), result("gencore-cpu", 2e-3, **bn),
          result("eager", 10e-3, layout="channels_last", **bn), result("compile", 5e-3, layout="channels_last", **bn),
          result("gencore-cpu", 8e-3, layout="channels_last", **bn)]
    path = write(tmp_path, "bn.json", rs)
    assert report.main([path, "--out", str(tmp_path / "o"), "--quiet", "--no-plots"]) == 0
    md = (tmp_path / "o" / "benchmark_report.md").read_text()
    assert "layout=channels_last, negative_slope=0.2" in md  # its own row
    assert "2 of 2 targets met" in md  # the contiguous case's two; none for channels-last (1.25x eager)


def test_report_refuses_a_file_without_gencore_results(tmp_path):
    path = write(tmp_path, "empty.json", [])
    assert report.main([path, "--out", str(tmp_path), "--quiet"]) == 1


def test_peak_memory_counts_what_a_call_allocates():
    x = torch.randn(1000, 1000)  # 4 MB, live before the call: not counted

    def fn():
        y = x * 2            # +4 MB
        z = y.exp()          # +4 MB (peak 8 MB)
        del y
        return z.sum()

    mem = peak_memory(fn, "cpu")
    assert mem["peak_mem_bytes"] == 8_000_000


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", "benchmarks/gpu_check.sh"], check=True)


def test_cases_that_differ_only_in_their_pytest_id_are_kept_apart():
    rs = []
    for slope, eager_t, fused_t in (("0.2", 4e-3, 1e-3), ("0.0", 6e-3, 3e-3)):
        for provider, t in (("eager", eager_t), ("gencore-cpu", fused_t)):
            r = result(provider, t)
            r["param"] = f"forward-64x32-{slope}-cpu-{provider}"
            rs.append(r)
    with pytest.warns(UserWarning, match="Record what differs"):
        add_ratios(rs)
    assert rs[1]["extra_info"]["speedup_vs_eager"] == 4.0
    assert rs[3]["extra_info"]["speedup_vs_eager"] == 2.0
    assert rs[1]["extra_info"]["case_id"] == "forward-64x32-0.2-cpu"


def test_measurement_fields_an_op_file_adds_do_not_split_cases():
    rs = [result("eager", 4e-3, floor_ms=1.0, vs_floor=4.0, saved_activation_bytes=300 << 20, negative_slope=0.2),
          result("fused", 2e-3, floor_ms=1.0, vs_floor=2.0, saved_activation_bytes=100 << 20, negative_slope=0.2)]
    add_ratios(rs)
    assert rs[1]["extra_info"]["speedup_vs_eager"] == 2.0
    assert "negative_slope" in dict(case_key(rs[0]["extra_info"]))
    grouped = report.group_cases([dict(r["extra_info"], median=r["stats"]["median"], key=case_key(r["extra_info"]),
                                       variant="") for r in rs])
    md = "\n".join(report.memory_table(next(iter(grouped.values()))))
    assert "| saved_activation | 300.0 | 100.0 | 0.33× |" in md
