"""bf16 autocast and ``torch.compile`` of the networks (:mod:`pyrovae.training.acceleration`):
the networks compute in bf16 only inside a training step, the ELBO stays float32 and
close to the float32 one, compiled networks give the same steps and the same
checkpoint names, and both options reach a run from the command line and a config
file. On a CPU (CI has no GPU); ``benchmarks/gpu.sh`` measures their speed on a GPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from pyrovae.config import TrainConfig
from pyrovae.training.acceleration import MixedPrecision, compile_networks, networks


def _step(vae, **options):
    from pyrovae.inference.objectives import make_objective
    from pyrovae.training.step import TrainStep, make_optimizer

    optimizer = make_optimizer(vae.parameters(), 1e-2)
    return TrainStep(vae, make_objective(TrainConfig()), optimizer, **options)


def test_the_networks_compute_in_bf16_only_while_active(make_vae):
    vae = make_vae(hidden=32)
    x = torch.rand(16, 1, 4, 4)
    full = vae.encoder(x)
    precision = MixedPrecision(vae, "bf16")
    assert torch.equal(vae.encoder(x), full)  # hooks idle outside a step
    with precision.active():
        low = vae.encoder(x)
        qz = vae.qz(x)
        z = qz.rsample()
        logits = vae.decoder(z)
    assert low.dtype == logits.dtype == torch.float32  # handed on as float32
    assert not torch.equal(low, full)  # but computed in bf16: 8 bits of mantissa
    torch.testing.assert_close(low, full, rtol=0.05, atol=0.05)
    assert not torch.is_autocast_enabled("cpu")  # left on the way out
    precision.remove()
    with precision.active():
        assert torch.equal(vae.encoder(x), full)


def test_autocast_is_left_when_a_network_raises(make_vae):
    vae = make_vae()
    precision = MixedPrecision(vae, "bf16")
    with precision.active(), pytest.raises((RuntimeError, IndexError)):
        vae.encoder(torch.rand(4, 7))  # the wrong shape
    assert not torch.is_autocast_enabled("cpu")
    assert precision._entered == []


def test_fp32_registers_nothing_and_an_unknown_precision_is_refused(make_vae):
    vae = make_vae()
    assert MixedPrecision(vae, "fp32")._handles == []
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        MixedPrecision(vae, "fp16")
    assert [type(m).__name__ for m in networks(vae)] and len(networks(vae)) == 2


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_a_bf16_step_trains_close_to_the_float32_one(make_vae, prior):
    """With the VampPrior the pseudo-inputs pass through the encoder under autocast too."""
    torch.manual_seed(0)
    base = make_vae(hidden=32, prior=prior)
    twin = copy.deepcopy(base)
    full, low = _step(base), _step(twin)
    low.precision = MixedPrecision(twin, "bf16")
    x = torch.rand(64, 1, 4, 4).bernoulli()
    losses = []
    for step in (full, low):
        torch.manual_seed(1)
        losses.append([step(x).item() for _ in range(20)])
    # The ELBO itself is float32 in both; bf16 networks move it by well under 1%.
    for a, b in zip(*losses, strict=True):
        assert abs(a - b) <= 0.01 * abs(a)
    assert losses[1][-1] < losses[1][0]  # and it trains
    assert low.direct and full.direct  # the direct ELBO still matched Pyro's on the first batch
    for name, value in twin.state_dict().items():
        assert value.dtype == base.state_dict()[name].dtype  # weights stay float32


def test_a_cvae_loss_in_bf16_stays_close_to_the_float32_one():
    """The conditional VAE's networks read the label too; under autocast they compute in
    bf16 and the ELBO, in float32, moves by well under 1%."""
    import pyro

    from pyrovae.model.conditional import ConditionalVAE
    from pyrovae.model.spec import model_config

    config = model_config(kind="cvae", data_shape=(1, 4, 4), hidden=(32,), latent_dim=2)
    config.n_classes = 3
    torch.manual_seed(0)
    cvae = ConditionalVAE(config)
    assert networks(cvae) == [cvae.encoder, cvae.decoder]
    x, y = torch.rand(64, 1, 4, 4).bernoulli(), torch.randint(0, 3, (64,))
    elbo = pyro.infer.TraceMeanField_ELBO()
    torch.manual_seed(1)
    full = elbo.differentiable_loss(cvae.model, cvae.guide, x, y).detach()
    precision = MixedPrecision(cvae, "bf16")
    with precision.active():
        torch.manual_seed(1)
        low = elbo.differentiable_loss(cvae.model, cvae.guide, x, y).detach()
    assert low.dtype == torch.float32 and float(low) != float(full)
    assert abs(float(low) - float(full)) <= 0.01 * abs(float(full))


def test_every_network_of_an_m2_model_computes_in_bf16_the_classifier_too():
    from pyrovae.model.semi_supervised import SemiSupervisedVAE
    from pyrovae.model.spec import model_config

    config = model_config(kind="m2", data_shape=(1, 4, 4), hidden=(32,), latent_dim=2)
    config.n_classes = 3
    m2 = SemiSupervisedVAE(config)
    assert networks(m2) == [m2.encoder, m2.decoder, m2.classifier]
    x = torch.rand(16, 1, 4, 4)
    full = m2.qy(x).logits
    precision = MixedPrecision(m2, "bf16")
    with precision.active():
        low = m2.qy(x).logits
    assert low.dtype == torch.float32 and not torch.equal(low, full)
    torch.testing.assert_close(low, full, rtol=0.05, atol=0.05)


def _three_steps(vae, x: torch.Tensor) -> list[float]:
    """The losses of three steps of ``vae`` on the batch ``x``, from one seed."""
    step = _step(vae)
    torch.manual_seed(1)
    return [step(x).item() for _ in range(3)]


def test_compiled_networks_take_the_same_steps_under_the_same_names(make_vae):
    torch.manual_seed(0)
    base = make_vae(hidden=32)
    twin = copy.deepcopy(base)
    names = list(twin.state_dict())
    # The eager backend runs TorchDynamo's capture without a C++ compiler (fast, exact).
    assert compile_networks(twin, backend="eager") == networks(twin)
    assert list(twin.state_dict()) == names
    x = torch.rand(32, 1, 4, 4).bernoulli()
    losses, twin_losses = _three_steps(base, x), _three_steps(twin, x)
    assert losses == pytest.approx(twin_losses, rel=1e-6)
    for name, value in base.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[name], value)


def test_compile_fuses_the_autoregressive_likelihoods_hidden_units_too(make_vae):
    from pyrovae.training.acceleration import release

    torch.manual_seed(0)
    base = make_vae(hidden=32, likelihood="autoregressive-bernoulli")
    with torch.no_grad():  # a term that is not zero, as after training
        for parameter in (base.likelihood.u, base.likelihood.w):
            parameter.normal_()
    twin = copy.deepcopy(base)
    names = list(twin.state_dict())
    compiled = compile_networks(twin, backend="eager")
    assert compiled == [*networks(twin), twin.likelihood.hidden_units]
    assert list(twin.state_dict()) == names  # checkpoints load into either
    x = torch.rand(32, 1, 4, 4).bernoulli()
    losses, twin_losses = _three_steps(base, x), _three_steps(twin, x)
    assert losses == pytest.approx(twin_losses, rel=1e-6)
    assert "forward" in twin.likelihood.hidden_units.__dict__  # compiled, in place
    release(twin, None)
    assert all("forward" not in module.__dict__ for module in compiled)


def test_the_compile_mode_reaches_torch_compile(make_vae, monkeypatch):
    from pyrovae.training import acceleration

    modes = []
    monkeypatch.setattr(acceleration.torch, "compile",
                        lambda function, backend, mode: modes.append(mode) or function)  # fmt: skip
    acceleration.accelerate(make_vae(), "fp32", compile=True, compile_mode="reduce-overhead")
    acceleration.accelerate(make_vae(), "fp32", compile=True)
    assert modes == ["reduce-overhead"] * 2 + [None] * 2  # encoder and decoder each


def _steps_on_cuda(vaes, x, steps=5, precision=None):
    """The losses of ``steps`` training steps of each VAE on the same draws."""
    results = []
    for vae in vaes:
        step = _step(vae)
        if precision is not None and vae is vaes[-1]:
            step.precision = MixedPrecision(vae, precision)
        torch.manual_seed(1)
        results.append([step(x).item() for _ in range(steps)])
    return results


@pytest.fixture
def fresh_dynamo(monkeypatch):
    """A fresh compile cache and counters, and no silent fallback: compiled forwards of every
    VAE share one cache of 8 variants, past which torch runs the forward eagerly, and
    inductor runs a graph it cannot capture as plain kernels, each unless told to fail."""
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True, raising=False)
    monkeypatch.setattr(torch._inductor.config.triton, "cudagraph_or_error", True, raising=False)
    yield counters
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_networks_on_cuda_take_the_eager_steps(make_vae, mode, fresh_dynamo):
    """Inductor's kernels on a GPU, and replayed as CUDA graphs (``reduce-overhead``),
    give the eager networks' steps up to float32 rounding."""
    torch.manual_seed(0)
    base = make_vae(hidden=32).cuda()
    twin = copy.deepcopy(base)
    compile_networks(twin, mode=mode)
    x = torch.rand(32, 1, 4, 4, device="cuda").bernoulli()
    eager, compiled = _steps_on_cuda([base, twin], x)
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert fresh_dynamo["inductor"].get("cudagraph_skips", 0) == 0
    for name, value in base.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[name], value, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_a_bf16_step_on_cuda_trains_close_to_the_float32_one(make_vae):
    torch.manual_seed(0)
    base = make_vae(hidden=32).cuda()
    twin = copy.deepcopy(base)
    x = torch.rand(64, 1, 4, 4, device="cuda").bernoulli()
    full, low = _steps_on_cuda([base, twin], x, steps=20, precision="bf16")
    assert full != low  # the networks did compute in bf16
    for a, b in zip(full, low, strict=True):
        assert abs(a - b) <= 0.01 * abs(a)


def test_the_precision_names_are_the_configs():
    from pyrovae.config import PRECISIONS as NAMES
    from pyrovae.training.acceleration import PRECISIONS

    assert tuple(PRECISIONS) == NAMES


def _spy(monkeypatch):
    """Count the steps run under bf16, and compile with the eager backend (no C++
    compiler needed); returns the counts."""
    from pyrovae.training import acceleration

    seen = {"active": 0, "compiled": 0}
    active, original = acceleration.MixedPrecision.active, torch.compile

    def counted(self):
        seen["active"] += 1
        return active(self)

    def eager(function, backend="inductor", mode=None):
        seen["compiled"] += 1
        return original(function, backend="eager")

    monkeypatch.setattr(acceleration.MixedPrecision, "active", counted)
    monkeypatch.setattr(acceleration.torch, "compile", eager)
    return seen


def test_training_runs_its_steps_in_bf16_compiled_and_returns_a_plain_model(tmp_path, monkeypatch):
    import pyrovae

    seen = _spy(monkeypatch)
    result = pyrovae.train(epochs=1, hidden=(16,), latent_dim=2, batch_size=256, eval_size=50,
                           precision="bf16", compile=True, device="cpu", progress=False,
                           log=lambda line: None, out=tmp_path / "run")  # fmt: skip
    assert seen["active"] == 6  # one per step: 6 batches of 256 digits
    assert seen["compiled"] == 2  # the encoder's and the decoder's forward
    vae = result.vae
    for module in networks(vae):
        assert "forward" not in module.__dict__  # the compiled forward is gone
        assert not module._forward_pre_hooks and not module._forward_hooks
    twin = copy.deepcopy(vae).double()  # what diagnose does; failed while compiled
    assert twin.encoder(torch.rand(3, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64

    resumed = pyrovae.resume(tmp_path / "run", epochs=2, compile=False, precision="fp32",
                             progress=False, log=lambda line: None)  # fmt: skip
    assert seen["active"] == 6 and seen["compiled"] == 2  # neither ran again
    assert resumed.config.train.precision == "fp32" and resumed.config.train.compile is False
    assert len(resumed.history) == 2


def test_a_compiler_that_fails_is_one_line_that_says_to_train_without_compile(
    tmp_path, monkeypatch
):
    from torch._dynamo.exc import TorchDynamoException

    from pyrovae.cli import main
    from pyrovae.training import acceleration

    def broken(function, backend="inductor", mode=None):
        def call(*args, **kwargs):
            raise TorchDynamoException("no working C++ compiler found")

        return call

    monkeypatch.setattr(acceleration.torch, "compile", broken)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--compile", "--epochs", "1", "--no-progress",
                                       "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--compile failed" in result.output and "--no-compile" in result.output
    monkeypatch.undo()
    resumed = CliRunner().invoke(main, ["train", "--resume", str(out), "--no-compile",
                                        "--epochs", "1", "--no-progress"])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output


def test_train_takes_precision_and_compile_from_the_command_line_and_a_config_file(tmp_path):
    from pyrovae.cli import main

    config_file = tmp_path / "speed.toml"
    config_file.write_text('precision = "bf16"\nepochs = 1\n')
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["train", "--config", str(config_file), "--hidden", "16", "--latent-dim", "2",
         "--eval-size", "50", "--no-progress", "--device", "cpu", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["precision"] == "bf16" and saved["compile"] is False
    assert 'precision = "bf16"' in (out / "config.toml").read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_elbo"] < 0

    bad = CliRunner().invoke(main, ["train", "--precision", "fp16", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "fp16" in bad.output and "Traceback" not in bad.output
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('precision = "fp8"\n')
    refused = CliRunner().invoke(
        main, ["train", "--config", str(bad_file), "--out", str(tmp_path / "y")]
    )
    assert refused.exit_code != 0 and "fp8" in refused.output
    assert "Traceback" not in refused.output and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_a_compiled_bf16_run_trains_evaluates_and_resumes(tmp_path):
    """With inductor, the real backend (it needs a C++ compiler; tens of seconds)."""
    from pyrovae.cli import main

    out = tmp_path / "run"
    args = ["train", "--compile", "--precision", "bf16", "--hidden", "32", "--latent-dim", "2",
            "--epochs", "2", "--eval-size", "100", "--no-progress", "--device", "cpu",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    figures = tmp_path / "figures.json"
    evaluated = CliRunner().invoke(main, ["evaluate", "--run", str(out), "--json", str(figures),
                                          "-k", "10", "--metrics", "logpx,elbo",
                                          "--no-progress"])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(figures.read_text())
    resumed = CliRunner().invoke(main, ["train", "--resume", str(out), "--epochs", "3",
                                        "--no-progress"])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3


def test_compiling_leaves_out_torchs_no_cuda_notice_and_nothing_else(make_vae):
    import logging

    compile_networks(make_vae())  # lazy: nothing is compiled until a network runs
    logger = logging.getLogger("torch.utils.cpp_extension")

    def passes(message: str) -> bool:
        return bool(logger.filter(logging.makeLogRecord({"msg": message, "levelno": 30})))

    assert not passes("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
    assert passes("Error building extension 'x'")
