"""Small, real training entry points for jobs: ``kawa jobs submit kawa.ml.trainers:logistic_regression``.

They double as templates: each reads its data (generated here, so they run offline), tracks the run with
lineage through :mod:`kawa.ml.tracking` and registers the model. Heavy packages are imported inside.
"""

from __future__ import annotations

import time
from typing import Any

from kawa.config import job_environment
from kawa.ml import tracking


def make_data(n: int, features: int, seed: int) -> tuple[Any, Any]:
    """A linearly separable-ish binary problem with a fixed seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    w = np.linspace(1.0, -1.0, features, dtype=np.float32)
    y = ((x @ w + 0.3 * rng.normal(size=n)) > 0).astype(np.int64)
    return x, y


def logistic_regression(
    model_name: str = "demo",
    n: int = 500,
    features: int = 4,
    seed: int = 0,
    c: float = 1.0,
    flavor: str = "sklearn",
    experiment: str | None = None,
    source_topic: str = "training-data",
) -> dict[str, Any]:
    """Train a scikit-learn logistic regression, log it (sklearn or ONNX flavor) and register it."""
    from sklearn.linear_model import LogisticRegression

    x, y = make_data(n, features, seed)
    with tracking.run(experiment, params={"n": n, "features": features, "seed": seed, "C": c}) as run:
        # The generated rows stand for records [0, n) of a topic: that is the lineage to record.
        run.log_lineage(topic=source_topic, partition=0, offsets=(0, n))
        model = LogisticRegression(C=c, max_iter=200).fit(x, y)
        accuracy = float(model.score(x, y))
        run.log_metric("accuracy", accuracy)
        if flavor == "onnx":
            from skl2onnx import to_onnx

            onnx_model = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
            version = run.log_model(onnx_model, flavor="onnx", register_as=model_name)
        else:
            version = run.log_model(model, flavor="sklearn", register_as=model_name, input_example=x[:2])
        return {"run_id": run.run_id, "version": version, "accuracy": accuracy}


def torch_mlp(
    steps: int = 200, batch: int = 256, features: int = 32, lr: float = 0.05, require_cuda: bool = False
) -> dict[str, Any]:
    """A tiny PyTorch MLP on generated data; trains on CUDA when a GPU is visible.

    Prints the evidence a GPU check needs: the device, its name, ``CUDA_VISIBLE_DEVICES`` and the loss
    going down. With ``require_cuda`` it fails when no GPU is visible (a GPU job must not run on the CPU).
    """
    import torch

    visible = job_environment().cuda_visible_devices
    cuda = torch.cuda.is_available()
    print(f"CUDA_VISIBLE_DEVICES={visible!r} torch={torch.__version__} cuda_available={cuda}", flush=True)
    if require_cuda and not cuda:
        raise RuntimeError(f"this job asked for a GPU but torch sees none (CUDA_VISIBLE_DEVICES={visible!r})")
    device = torch.device("cuda:0" if cuda else "cpu")
    if cuda:
        print(
            f"device={device} name={torch.cuda.get_device_name(0)} count={torch.cuda.device_count()}",
            flush=True,
        )
    gen = torch.Generator(device="cpu").manual_seed(0)
    w_true = torch.randn(features, 1, generator=gen)
    model = torch.nn.Sequential(torch.nn.Linear(features, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses: list[float] = []
    started = time.perf_counter()
    with tracking.run("torch-mlp", params={"steps": steps, "batch": batch, "lr": lr}) as run:
        for step in range(steps):
            xb = torch.randn(batch, features, generator=gen).to(device)
            yb = (xb @ w_true.to(device) > 0).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % max(1, steps // 10) == 0 or step == steps - 1:
                value = float(loss.item())
                losses.append(value)
                run.log_metric("loss", value, step=step)
                print(f"step {step:4d} loss {value:.4f} on {next(model.parameters()).device}", flush=True)
    elapsed = time.perf_counter() - started
    result = {
        "device": str(next(model.parameters()).device),
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda_visible_devices": visible,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "loss_went_down": losses[-1] < losses[0],
        "seconds": round(elapsed, 2),
    }
    print(f"RESULT {result}", flush=True)
    return result
