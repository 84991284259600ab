"""c2l_cli.accel (CUDA-graph helper, env switch, compile opt-in) and the prior/train fast-path plumbing, on the CPU.

Graph capture itself needs CUDA; here the wrapper runs in its eager fallback and in ``simulate`` mode (the
static-buffer path — copy inputs in, run, hand outputs back — without a graph), which must give results
byte-identical to calling the function directly.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from c2l_cli import accel
from c2l_cli.accel import GraphedFunction, cuda_graphs_enabled, cuda_graphs_setting, maybe_compile
from c2l_cli.errors import UsageError
from c2l_cli.prior import Prior, PriorConfig

# --- the environment switch --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected", [(None, "auto"), ("", "auto"), ("auto", "auto"), ("0", "0"), ("off", "0"), ("1", "1"), ("ON", "1")]
)
def test_setting_values(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("C2L_CUDA_GRAPHS", raising=False)
    else:
        monkeypatch.setenv("C2L_CUDA_GRAPHS", value)
    assert cuda_graphs_setting() == expected


def test_setting_rejects_garbage(monkeypatch):
    monkeypatch.setenv("C2L_CUDA_GRAPHS", "sometimes")
    with pytest.raises(UsageError, match="C2L_CUDA_GRAPHS"):
        cuda_graphs_setting()


def test_enabled_is_false_off_cuda_whatever_the_flag(monkeypatch):
    monkeypatch.setenv("C2L_CUDA_GRAPHS", "1")
    for flag in (None, True, False):
        assert cuda_graphs_enabled("cpu", flag) is False
        assert cuda_graphs_enabled(torch.device("cpu"), flag) is False


def test_enabled_on_cuda_follows_flag_then_env(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # decision logic only; nothing runs on CUDA
    monkeypatch.delenv("C2L_CUDA_GRAPHS", raising=False)
    assert cuda_graphs_enabled("cuda", None) is True
    assert cuda_graphs_enabled("cuda:0", False) is False
    monkeypatch.setenv("C2L_CUDA_GRAPHS", "0")
    assert cuda_graphs_enabled("cuda", None) is False
    assert cuda_graphs_enabled("cuda", True) is True  # an explicit request wins over the environment


def test_maybe_compile_keeps_weight_names():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    keys = list(net.state_dict())
    assert maybe_compile(net, False) is net
    assert getattr(net, "_compiled_call_impl", None) is None
    assert maybe_compile(net, True, dynamic=False) is net  # lazily compiled at the first call (not run here)
    assert net._compiled_call_impl is not None
    assert list(net.state_dict()) == keys  # no "_orig_mod." prefixes in checkpoints


# --- GraphedFunction ------------------------------------------------------------------------------------------


def _affine(x, w, scale):
    return x @ w * scale + 1.0


def test_eager_fallback_on_cpu():
    gf = GraphedFunction(_affine)
    x, w = torch.randn(3, 4), torch.randn(4, 2)
    assert torch.equal(gf(x, w, 2.0), _affine(x, w, 2.0))
    assert gf.stats.eager_calls == 1 and gf.stats.captures == 0 and gf.cached_keys() == []


def test_disabled_is_always_eager():
    gf = GraphedFunction(_affine, simulate=True, enabled=False)
    x, w = torch.randn(3, 4), torch.randn(4, 2)
    for _ in range(3):
        gf(x, w, 2.0)
    assert gf.stats.eager_calls == 3 and gf.stats.captures == 0


def test_simulate_matches_eager_and_tracks_new_inputs():
    gf = GraphedFunction(_affine, simulate=True)
    w = torch.randn(4, 2)
    for seed in range(4):
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
        out = gf(x, w, 0.5)
        assert torch.equal(out, _affine(x, w, 0.5))  # byte-identical
    assert gf.stats.captures == 1 and gf.stats.replays == 4 and gf.stats.eager_calls == 0
    # the recording holds its own copies of the inputs: changing the caller's tensor afterwards changes nothing
    x = torch.randn(3, 4)
    ref = _affine(x, w, 0.5)
    out = gf(x, w, 0.5)
    x.add_(100.0)
    assert torch.equal(out, ref)


def test_recorded_in_inference_mode_replayed_outside():
    gf = GraphedFunction(_affine, simulate=True)
    w = torch.randn(4, 2)
    with torch.inference_mode():
        gf(torch.randn(3, 4), w, 1.0)
    with torch.no_grad():
        x = torch.randn(3, 4)
        assert torch.equal(gf(x, w, 1.0), _affine(x, w, 1.0))
    x = torch.randn(3, 4)
    with torch.inference_mode():
        assert torch.equal(gf(x, w, 1.0), _affine(x, w, 1.0))


def test_keys_separate_shapes_dtypes_values_and_extra():
    gf = GraphedFunction(_affine, simulate=True, max_entries=16)
    w = torch.randn(4, 2)
    gf(torch.randn(3, 4), w, 1.0)
    gf(torch.randn(3, 4), w, 1.0)  # same signature: replay
    gf(torch.randn(5, 4), w, 1.0)  # new shape
    gf(torch.randn(3, 4), w, 2.0)  # new non-tensor value
    gf(torch.randn(3, 4, dtype=torch.float64), w.double(), 1.0)  # new dtypes
    gf(torch.randn(3, 4), w, 1.0, key="other weights")  # new extra key
    gf(torch.randn(4, 3).t(), w, 1.0)  # same shape, other strides
    assert gf.stats.captures == 6 and len(gf.cached_keys()) == 6
    k1 = GraphedFunction.signature((torch.zeros(2, 3), 1.5, "ddim"), extra=7)
    k2 = GraphedFunction.signature((torch.ones(2, 3), 1.5, "ddim"), extra=7)
    assert k1 == k2  # values of tensors never enter the key
    assert k1 != GraphedFunction.signature((torch.zeros(2, 3), 1.5, "ddpm"), extra=7)


def test_unhashable_argument_is_refused():
    gf = GraphedFunction(lambda x, opts: x * 2, simulate=True)
    with pytest.raises(TypeError):
        gf(torch.ones(2), [1, 2])


def test_capture_after_counts_eager_calls_per_key():
    gf = GraphedFunction(_affine, simulate=True, capture_after=2)
    x, w = torch.randn(3, 4), torch.randn(4, 2)
    gf(x, w, 1.0)
    gf(x, w, 1.0)
    assert gf.stats.captures == 0 and gf.stats.eager_calls == 2
    gf(x, w, 1.0)
    assert gf.stats.captures == 1
    gf(x, w, 3.0, capture_after=0)  # a per-call override records at once
    assert gf.stats.captures == 2 and gf.stats.eager_calls == 2


def test_lru_eviction_is_bounded():
    gf = GraphedFunction(_affine, simulate=True, max_entries=2)
    w = torch.randn(4, 2)
    for s in (1.0, 2.0, 1.0, 3.0):  # 1.0 is used again before 3.0 arrives: 2.0 is the one evicted
        gf(torch.randn(3, 4), w, s)
    assert gf.stats.captures == 3 and gf.stats.evictions == 1
    values = [k[0][2][2] for k in gf.cached_keys()]
    assert values == [1.0, 3.0]
    gf.clear()
    assert gf.cached_keys() == []


def test_outputs_cloned_or_aliased():
    def two(x):
        return x + 1, x * 2

    cloned = GraphedFunction(two, simulate=True)
    a1, _ = cloned(torch.zeros(2))
    cloned(torch.ones(2))
    assert torch.equal(a1, torch.ones(2))  # untouched by the next replay
    aliased = GraphedFunction(two, simulate=True, clone_outputs=False)
    b1, _ = aliased(torch.zeros(2))
    aliased(torch.ones(2))
    assert torch.equal(b1, torch.full((2,), 2.0))  # documented: the static output is overwritten


def test_bad_output_type_is_a_type_error():
    gf = GraphedFunction(lambda x: {"y": x}, simulate=True)
    with pytest.raises(TypeError, match="tensor"):
        gf(torch.ones(2))


def test_failed_capture_warns_and_runs_eagerly_after():
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("operation not permitted when stream is capturing")
        return x * 3

    gf = GraphedFunction(flaky, simulate=True)
    with pytest.warns(RuntimeWarning, match="capture failed"):
        out = gf(torch.ones(2))
    assert torch.equal(out, torch.full((2,), 3.0))
    assert len(gf.stats.failures) == 1
    assert torch.equal(gf(torch.ones(2)), torch.full((2,), 3.0))
    assert gf.stats.captures == 0 and gf.stats.eager_calls == 2


# --- the prior's graphed sampling loop ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_prior():
    cfg = PriorConfig(dim=32, depth=2, heads=2, dim_head=16, n_latents=1, latent_repeats=(4,), timesteps=100)
    g = torch.Generator().manual_seed(0)
    return Prior.new(cfg, torch.randn(32, generator=g), torch.rand(32, generator=g) + 0.5, device="cpu", seed=0).eval()


CASES = [
    dict(steps=4, guidance=2.0, sampler="reference"),
    dict(steps=5, guidance=1.0, sampler="ddpm"),
    dict(steps=3, guidance=0.0, sampler="ddim", eta=0.5, truncation=0.7),
]


@pytest.mark.parametrize("case", CASES)
def test_prior_graph_flag_is_byte_identical_on_cpu(tiny_prior, case):
    embed = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    ref = tiny_prior.sample(embed, generator=5, graph=False, **case)
    for flag in (None, True):
        assert torch.equal(tiny_prior.sample(embed, generator=5, graph=flag, **case), ref)
    assert "_graphs" not in tiny_prior.__dict__  # nothing recorded off CUDA


@pytest.mark.parametrize("case", CASES)
def test_prior_graph_plumbing_simulated(monkeypatch, tiny_prior, case):
    """The CUDA code path (static noise/embedding buffers, keyed cache) with the graph simulated on the CPU."""
    prior = copy.deepcopy(tiny_prior)
    runner = GraphedFunction(prior._sample_loop, capture_after=1, simulate=True)
    prior.__dict__["_graphs"] = runner
    monkeypatch.setattr("c2l_cli.prior.cuda_graphs_enabled", lambda device, flag=None: flag is not False)
    for seed in range(3):  # new noise and a new embedding every call: the static inputs must follow
        embed = torch.randn(2, 32, generator=torch.Generator().manual_seed(10 + seed))
        ref = tiny_prior.sample(embed, generator=seed, graph=False, **case)
        assert torch.equal(prior.sample(embed, generator=seed, **case), ref)
    assert runner.stats.eager_calls == 1  # auto: the first call of a signature runs eagerly …
    assert runner.stats.captures == 1 and runner.stats.replays == 2  # … the second records, later ones replay
    embed = torch.randn(5, 32)
    prior.sample(embed, generator=0, graph=True, **case)  # explicit: record at the first call
    assert runner.stats.captures == 2
    assert torch.equal(prior.sample(embed, generator=0, graph=False, **case), tiny_prior.sample(embed, generator=0, **case))
    assert runner.stats.replays == 3  # graph=False bypassed the runner


def test_prior_graph_key_follows_weight_storage(monkeypatch, tiny_prior):
    prior = copy.deepcopy(tiny_prior)
    runner = GraphedFunction(prior._sample_loop, simulate=True)
    prior.__dict__["_graphs"] = runner
    monkeypatch.setattr("c2l_cli.prior.cuda_graphs_enabled", lambda device, flag=None: True)
    embed = torch.randn(1, 32)
    prior.sample(embed, generator=0, graph=True)
    prior.net.time_embed.weight = torch.nn.Parameter(prior.net.time_embed.weight.detach().clone())  # re-allocated
    prior.sample(embed, generator=0, graph=True)
    assert runner.stats.captures == 2
    assert runner.cached_keys()[-1][1][-1] is False
    # compiling after a recording makes a new key too (an eager stand-in for the compiled call: nothing compiles here)
    monkeypatch.setattr(prior.net, "_compiled_call_impl", prior.net._call_impl, raising=False)
    prior.sample(embed, generator=0, graph=True)
    assert runner.stats.captures == 3 and runner.cached_keys()[-1][1][-1] is True


def test_prior_deepcopy_drops_recorded_graphs(tiny_prior):
    prior = copy.deepcopy(tiny_prior)
    prior._graph_runner()
    assert "_graphs" in prior.__dict__
    twin = copy.deepcopy(prior)
    assert "_graphs" not in twin.__dict__
    assert twin._graph_runner() is not prior._graph_runner()
    assert accel.GraphedFunction is GraphedFunction


# --- training: the compile switch ------------------------------------------------------------------------------


def _random_dataset(root, n=48, dim=16):
    import numpy as np

    from c2l_cli.data import write_dataset

    rng = np.random.default_rng(0)
    write_dataset(root, rng.standard_normal((n, dim), dtype=np.float32), rng.standard_normal((n, dim), dtype=np.float32),
                  shard_size=n, generator={"source": "", "z_dim": dim, "w_dim": dim, "num_ws": 4})
    return root


def test_train_compile_flag_plumbing(tmp_path, monkeypatch):
    """`compile=true` compiles the online network only (not the EMA copy), in place; the default leaves it eager."""
    from c2l_cli.train import TrainConfig, build_config, train

    assert TrainConfig().compile is False
    assert "compile" in TrainConfig.RESUMABLE
    data = _random_dataset(tmp_path / "data")
    calls = []

    def record(module, enabled, **kwargs):  # stands in for torch.compile (an inductor build is minutes on this CPU)
        calls.append((type(module).__name__, enabled, kwargs))
        return module

    monkeypatch.setattr(accel, "maybe_compile", record)
    base = {"depth": 1, "heads": 2, "dim_head": 8, "batch_size": 8, "max_steps": 2, "log_every": 1, "ckpt_every": 10, "val_every": 0}
    res = {}
    for flag in ("false", "true"):
        cfg = build_config(base, sets=[f"compile={flag}"])
        run = tmp_path / f"run-{flag}"
        train(data, run, cfg, device="cpu", verify_data=False)
        res[flag] = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert json.loads((run / "config.json").read_text())["train"]["compile"] is (flag == "true")
    assert calls == [("PriorNetwork", False, {"dynamic": False}), ("PriorNetwork", True, {"dynamic": False})]
    assert res["false"] == res["true"]  # the switch itself changes nothing else


def test_train_cuda_graph_option_plumbing(tmp_path, monkeypatch):
    """`cuda_graph=true`: eager with a note off CUDA; where it applies, the recorded network stands in for the
    online one with the step's batch shapes, and nothing else in the step changes."""
    import c2l_cli.train as T
    from c2l_cli.train import TrainConfig, build_config, train

    assert TrainConfig().cuda_graph is False and "cuda_graph" in TrainConfig.RESUMABLE
    with pytest.raises(UsageError, match="compile and cuda_graph"):
        build_config(sets=["compile=true", "cuda_graph=true"])
    data = _random_dataset(tmp_path / "data")
    base = {"depth": 1, "heads": 2, "dim_head": 8, "batch_size": 8, "max_steps": 3, "log_every": 1, "ckpt_every": 10, "val_every": 0}

    def losses(run):
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    notes = []
    train(data, tmp_path / "eager", build_config(base, sets=["cuda_graph=true"]), device="cpu", verify_data=False,
          on_status=notes.append)
    assert any("running eagerly" in n for n in notes)
    assert json.loads((tmp_path / "eager" / "config.json").read_text())["cuda_graph"] is False

    calls = []

    def fake_graph(net, batch, latent_shape, embed_dim, timesteps, device, amp_ctx):
        calls.append((type(net).__name__, batch, latent_shape, embed_dim, timesteps, str(device), amp_ctx))
        return net  # what make_graphed_callables returns on CUDA: the same module, forward/backward replayed

    monkeypatch.setattr(T, "_can_graph", lambda cfg, device, dist: bool(cfg.cuda_graph))
    monkeypatch.setattr(T, "_graph_network", fake_graph)
    train(data, tmp_path / "graphed", build_config(base, sets=["cuda_graph=true"]), device="cpu", verify_data=False)
    assert calls == [("PriorNetwork", 8, (16,), 16, 1000, "cpu", None)]
    assert json.loads((tmp_path / "graphed" / "config.json").read_text())["cuda_graph"] is True
    assert losses(tmp_path / "graphed") == losses(tmp_path / "eager")


needs_cc = pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="torch.compile on the CPU needs a C compiler")


@pytest.mark.slow
@needs_cc
def test_train_compile_for_real_matches_eager_and_resumes(tmp_path):
    """A real torch.compile of the training forward/backward on the CPU: the same losses (to rounding); its
    checkpoint resumes on the eager path (weight names unchanged)."""
    from c2l_cli.train import build_config, train

    data = _random_dataset(tmp_path / "data", n=64)
    base = {"depth": 1, "heads": 2, "dim_head": 8, "batch_size": 16, "max_steps": 4, "log_every": 1, "ckpt_every": 2, "val_every": 0}
    losses = {}
    for flag in ("false", "true"):
        run = tmp_path / f"run-{flag}"
        train(data, run, build_config(base, sets=[f"compile={flag}"]), device="cpu", verify_data=False)
        losses[flag] = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses["true"] == pytest.approx(losses["false"], abs=1e-5)
    train(data, tmp_path / "run-true", build_config(dict(base, max_steps=6)), resume=True,
          resume_overrides={"max_steps": 6, "compile": False}, device="cpu", verify_data=False)
    assert len((tmp_path / "run-true" / "metrics.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow
@needs_cc
def test_prior_sample_with_compiled_network(tiny_prior):
    prior = copy.deepcopy(tiny_prior)
    maybe_compile(prior.net, True, dynamic=False)
    embed = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(prior.sample(embed, generator=2), tiny_prior.sample(embed, generator=2), rtol=0, atol=1e-4)
    assert list(prior.state_dict()) == list(tiny_prior.state_dict())


# --- on CUDA (skipped here; run by the GPU session) -----------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_train_graph_matches_eager(tmp_path):
    from c2l_cli.train import build_config, train

    data = _random_dataset(tmp_path / "data", n=64)
    base = {"depth": 1, "heads": 2, "dim_head": 8, "batch_size": 16, "max_steps": 4, "log_every": 1, "ckpt_every": 10,
            "val_every": 0, "amp": "none"}
    out = {}
    for flag in ("false", "true"):
        run = tmp_path / flag
        train(data, run, build_config(base, sets=[f"cuda_graph={flag}"]), device="cuda", verify_data=False)
        assert json.loads((run / "config.json").read_text())["cuda_graph"] is (flag == "true")
        out[flag] = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert out["true"] == pytest.approx(out["false"], abs=1e-4)


@cuda
def test_cuda_graphed_function_replays():
    gf = GraphedFunction(_affine)
    w = torch.randn(64, 32, device="cuda")
    for _ in range(3):
        x = torch.randn(16, 64, device="cuda")
        torch.testing.assert_close(gf(x, w, 0.5), _affine(x, w, 0.5), rtol=0, atol=1e-5)
    assert gf.stats.captures == 1 and gf.stats.replays == 3


@cuda
@pytest.mark.parametrize("case", CASES)
def test_cuda_prior_graph_matches_eager(tiny_prior, case):
    prior = copy.deepcopy(tiny_prior).to("cuda")
    embed = torch.randn(3, 32, device="cuda")
    for seed in range(3):
        ref = prior.sample(embed, generator=seed, graph=False, **case)
        got = prior.sample(embed, generator=seed, graph=True, **case)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)  # the same kernels, replayed
    assert prior._graph_runner().stats.captures == 1


# --- benchmarks/summarize.py on CUDA-shaped results ----------------------------------------------------------


def test_summarize_targets_table(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize.py"
    spec = importlib.util.spec_from_file_location("c2l_bench_summarize", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def put(name, doc):
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))

    put("prior", {"devices": {"cuda": {"cases": [
        {"variant": "eager", "batch": 16, "steps": 1000, "seconds_best": 3.0},
        {"variant": "graph", "batch": 16, "steps": 1000, "seconds_best": 0.3},
    ]}}})
    put("prior_compile", {"devices": {"cuda": {"cases": [
        {"variant": "compile+graph", "batch": 16, "steps": 1000, "seconds_best": 0.12},
    ]}}})
    put("stylegan", {"results": [
        {"device": "cuda", "batch": 32, "variant": "float32", "images_per_second": 100.0},
        {"device": "cuda", "batch": 32, "variant": "float16", "images_per_second": 400.0, "output_finite": True},
        {"device": "cuda", "batch": 32, "variant": "bfloat16", "images_per_second": 900.0, "output_finite": False},
        {"device": "cuda", "batch": 32, "variant": "float16+channels_last", "images_per_second": 800.0,
         "max_abs_diff_vs_fp32": 0.5, "mean_abs_diff_vs_fp32": 0.1},  # outside the tolerance: not counted
    ]})
    put("train", {"batch_size": 512, "prior": {"dim": 512}, "results": [
        {"device": "cuda", "variant": "fp32", "steps_per_s": 20.0},
        {"device": "cuda", "variant": "bf16+fused", "steps_per_s": 50.0},
    ]})
    put("gendata", "not json")  # a failed run
    put("sample", {"candidates": 16, "steps": 4, "results": [
        {"device": "cuda", "dtype": "float16", "runs": 10, "image_size": [1024, 1024],
         "end_to_end_s": {"median": 0.02}, "max_memory_gib": 3.0}]})
    put("sample_fp32", {"candidates": 16, "steps": 4, "results": [
        {"device": "cuda", "dtype": "float32", "runs": 3, "image_size": [1024, 1024],
         "end_to_end_s": {"median": 0.2}, "max_memory_gib": 7.0}]})
    rows = {line.split(" | ")[0].lstrip("| "): line for line in mod.targets_table(tmp_path, "cuda")[2:]}
    assert len(rows) == 6
    prior_row = rows["prior alone, 1000 steps, batch 16, guidance 2"]
    assert "120.0 ms" in prior_row and "compile+graph" in prior_row and "×25.00" in prior_row and "**met**" in prior_row
    sg = rows["StyleGAN2 1024 synthesis throughput, batch 32"]
    assert "400.0 images/s" in sg and "×4.00" in sg and "not met" in sg  # non-finite / out-of-tolerance figures not counted
    assert "×2.50" in rows["`train` at batch 512"]
    assert rows["`gen-data` throughput (synthesis + resize + CLIP + write)"].count("not measured") >= 2
    assert "20.0 ms" in rows["`sample` latency, 1 prompt, 16 candidates, 4 steps, re-rank, 1024²"]
    mem = rows["peak GPU memory for `sample` above"]
    assert "3.22 GB" in mem and "**met**" in mem
    text = "\n".join(mod.details(tmp_path, "cuda"))
    assert "compile+graph" in text and "|Δ|" not in text
