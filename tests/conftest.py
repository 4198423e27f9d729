"""Shared fixtures: every test starts from seeded RNGs, an empty param store and
Pyro's validation on (as in Pyro's own tests/conftest.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch


def pytest_configure(config):
    # Under pytest-xdist each worker takes one core: torch's default of a thread
    # per core would put two workers' threads on each core and slow both.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded_clean_pyro():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture
def tiny_config():
    """A digits config that trains in about a second."""
    from pyrovae.config import DataConfig, RunConfig, TrainConfig
    from pyrovae.model.spec import model_config

    return RunConfig(
        data=DataConfig(dataset="digits"),
        model=model_config(hidden=(32,), latent_dim=4),
        train=TrainConfig(epochs=2, batch_size=256, device="cpu"),
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_vae():
    """Build a small VAE on 4x4 images, validated, with any registered guide and prior."""
    from pyrovae.model.spec import REGISTRIES, model_config
    from pyrovae.model.vae import VAE

    def make(
        guide: str = "normal",
        prior: str = "normal",
        latent_dim: int = 3,
        hidden: int = 16,
        flows: int = 1,
        **options: object,
    ) -> VAE:
        takes_flows = any(
            REGISTRIES[kind].get(name).option("flows") is not None
            for kind, name in (("guide", guide), ("prior", prior))
        )
        flow_options = {"flows": flows, "flow_hidden": (hidden,)} if takes_flows else {}
        config = model_config(
            data_shape=(1, 4, 4),
            hidden=(hidden,),
            latent_dim=latent_dim,
            guide=guide,
            prior=prior,
            **flow_options,
            **options,
        )
        return VAE(config)

    return make


@pytest.fixture(scope="session")
def tiny_digits_run(tmp_path_factory):
    """The folder of a digits run (hidden 16, latent 2, 1 epoch) trained once per session,
    for tests that only read a run (write their outputs elsewhere)."""
    import pyrovae

    out = tmp_path_factory.mktemp("tiny-digits") / "run"
    pyrovae.train(
        dataset="digits",
        hidden=(16,),
        latent_dim=2,
        epochs=1,
        device="cpu",
        out=out,
        progress=False,
        log=lambda line: None,
    )
    return out


@pytest.fixture
def write_idx_set():
    """A writer of the four IDX files of an MNIST-like set (random 28x28 images and
    labels 0-9): ``write_idx_set(folder, gz=..., n_train=20, n_test=10, seed=0)``
    returns the arrays it wrote, by file name without ``.gz``."""
    import gzip
    import struct

    def write(
        folder: Path, *, gz: bool, n_train: int = 20, n_test: int = 10, seed: int = 0
    ) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        arrays = {
            "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
        }
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            # Magic 0x0803 (unsigned bytes, 3 dimensions) or 0x0801 (1), then the sizes.
            header = struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape)
            payload = header + array.tobytes()
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
        return arrays

    return write


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1, for the download paths: ``(folder, url)``,
    the url ending in ``/``. Requests are served by a thread, not logged."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
