"""train-cnn's PyTorch engine (``--engine torch``): the same recipe, faces, schedule, checkpoints
and bundle as the Keras engine, trained by a plain PyTorch loop.

Why a second engine: issue 25 measured the same data and settings in a plain PyTorch loop fitting
faster (batch losses about 0.1 where the Keras engine averaged 0.28 at the same number of images)
and ranking unseen FF++ clips better, and PyTorch is the backend of the GPU machines and of
``torchrun``. The model is ``efficientnet_lite_pytorch``'s EfficientNet-Lite (nets/efficientnet_lite.py
ports it to Keras layer for layer) with a one-logit head, trained on train/cnn.py's FaceDataset batches
(the Keras engine's faces, augmentation, balance and sampling), mapped to ``(x - 127) / 128``
channels-last. Differences (recorded in the bundle's training notes): AdamW (decoupled weight decay
0.01) instead of Adam; ``--workers`` threads read and augment the next batches while one trains.

The schedule is train/cnn.py's phases (optional frozen warm-up, rounds restarting from the best weights
at the learning rate x 0.1), early stopping on validation AUC by train/loop.improved; each epoch writes
``epoch-NNNN.pt`` (model and optimizer) and the loop state (train/loop.Checkpoints), so ``--resume``
continues a killed run. The best weights so far are ported into the Keras classifier
(nets/efficientnet_lite.port_torch_state) and saved as the bundle's ``cnn.weights.h5``: export,
calibration, evaluation and serving are those of a Keras-trained bundle.

Several processes: under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on every WORLD_SIZE-th
batch of the same epoch order inside DistributedDataParallel (gloo on CPU, NCCL on GPUs: the weights
stay equal), every process validates, and only rank 0 writes (docs/distributed.md).
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from deepfake_cli.errors import OptionsError
from deepfake_cli.nets.bundle import BundleError, save_weights_atomic
from deepfake_cli.nets.models import FINE_TUNE_BN_MOMENTUM
from deepfake_cli.train.loop import Checkpoints, Phase, finish_state, improved

WEIGHT_DECAY = 0.01  # AdamW's default in PyTorch (the probe of issue 25)
BN_MOMENTUM = 1 - FINE_TUNE_BN_MOMENTUM  # the Keras engine's, in PyTorch's convention (weight of the new batch)


@dataclass
class Distributed:
    """This process's place among the training processes (torchrun's environment)."""

    rank: int = 0
    world: int = 1

    @property
    def chief(self) -> bool:
        return self.rank == 0


def distributed() -> Distributed:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def barrier(place: Distributed) -> None:
    """Wait for every process (no-op for one)."""
    if place.world > 1:
        import torch.distributed as dist

        dist.barrier()


def lite_variant(backbone: str) -> int:
    """N of ``efficientnet-liteN``; the PyTorch engine trains only those."""
    if not backbone.startswith("efficientnet-lite") or not backbone[-1].isdigit():
        raise OptionsError(f"--engine torch trains the EfficientNet-Lite backbones (efficientnet-lite0..4), "
                           f"not {backbone}: use --engine keras for it")
    return int(backbone[len("efficientnet-lite"):])


def check_options(backbone: str, weights: str, freeze_blocks: int = 0) -> None:
    """OptionsError unless the PyTorch engine can train this backbone from these weights (called
    when the options are made, so a refused run writes nothing)."""
    lite_variant(backbone)
    if weights not in ("imagenet", "none"):
        raise OptionsError("--engine torch starts from --weights imagenet or none; "
                           "a Keras weights file needs --engine keras")
    if freeze_blocks < 0 or (freeze_blocks and weights != "imagenet"):
        raise OptionsError("--freeze-blocks N (N >= 0) keeps ImageNet's first blocks: it needs --weights imagenet")
    if freeze_blocks:  # as many as the network has would freeze all but the head, silently
        from efficientnet_lite_pytorch import EfficientNet
        if freeze_blocks >= (blocks := len(EfficientNet.from_name(backbone)._blocks)):
            raise OptionsError(f"--freeze-blocks {freeze_blocks}: {backbone} has {blocks} blocks; keep fewer")


def build_net(backbone: str, input_size: int, weights: str, dropout: float):
    """The reference EfficientNet-Lite with a one-logit head, ImageNet weights if asked (offline)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from deepfake_cli.nets.efficientnet_lite import torch_weights_path

    check_options(backbone, weights)
    variant = lite_variant(backbone)
    net = EfficientNet.from_name(f"efficientnet-lite{variant}", num_classes=1, image_size=input_size,
                                 dropout_rate=dropout)
    if weights == "imagenet":
        state = torch.load(str(torch_weights_path(variant)), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing = set(net.load_state_dict(state, strict=False).missing_keys)
        if missing != {"_fc.weight", "_fc.bias"}:
            raise BundleError(f"ImageNet weights of {backbone} do not fit the network: missing {sorted(missing)[:3]}")
    return net


def set_trainable(net, backbone_trainable: bool, frozen_batchnorm: bool, freeze_blocks: int = 0) -> None:
    """Freeze or unfreeze everything but the head, as train/cnn.py's Keras engine does: frozen layers
    (and, with ``frozen_batchnorm``, batch-norm layers) run in inference mode and do not learn; so
    do the stem and the first ``freeze_blocks`` blocks throughout (no backward pass through them)."""
    import torch

    net.train()
    for name, module in net.named_modules():
        head = name.startswith("_fc")
        kept = freeze_blocks > 0 and (name.startswith(("_conv_stem", "_bn0")) or (
            name.startswith("_blocks.") and int(name.split(".")[1]) < freeze_blocks))
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(head or (backbone_trainable and not kept))
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = BN_MOMENTUM
            if not backbone_trainable or frozen_batchnorm or kept:
                module.eval()
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(False)


def to_tensor(x: np.ndarray, device):
    """(N, S, S, 3) floats in [0, 255] (FaceDataset's batches) -> normalised channels-last NCHW."""
    import torch

    from deepfake_cli.nets.efficientnet_lite import MEAN_RGB, STDDEV_RGB

    t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(0, 3, 1, 2)
    t = ((t - MEAN_RGB) / STDDEV_RGB).contiguous(memory_format=torch.channels_last)
    return t.to(device, non_blocking=True)


def prefetched(dataset, indices: list[int], workers: int = 1):
    """dataset[i] for i in ``indices``, in order, the next ones read by ``workers`` threads (train-cnn's
    ``--workers``, as the Keras engine's loader) while the caller computes."""
    ahead = max(1, workers) + 1
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="dfd-loader") as pool:
        pending = deque(pool.submit(dataset.__getitem__, i) for i in indices[:ahead])
        for i in indices[ahead:] + [None] * min(ahead, len(indices)):
            batch = pending.popleft().result()
            if i is not None:
                pending.append(pool.submit(dataset.__getitem__, i))
            yield batch


def face_scores(net, dataset, device, flip: bool = False, workers: int = 1) -> np.ndarray:
    """P(fake) of every face of ``dataset`` in its order (``flip``: mean with the mirror image), as
    train/cnn.face_scores gives them for the Keras engine."""
    import torch

    net.eval()
    out = []
    with torch.inference_mode():
        for batch in prefetched(dataset, list(range(len(dataset))), workers):
            x = to_tensor(batch[0], device)
            p = torch.sigmoid(net(x).float())
            if flip:
                p = (p + torch.sigmoid(net(torch.flip(x, dims=[3])).float())) / 2
            out.append(p.reshape(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@dataclass
class TorchRun:
    """What the PyTorch loop needs: the data, the schedule's rules, where to write."""

    train: object  # FaceDataset (set_epoch, __getitem__, __len__, items)
    evaluate: Callable[[np.ndarray], dict]  # val face scores -> val metrics
    val: object
    checkpoints: Checkpoints
    patience: int
    seed: int
    flip: bool
    frozen_batchnorm: bool
    mixed_precision: str = "auto"  # bf16 autocast: auto = on a GPU only (bf16 is slower on this CPU)
    workers: int = 1  # loader threads
    freeze_blocks: int = 0  # the stem and this many first blocks never train (set_trainable)
    on_epoch: Callable[[dict], None] | None = None
    publish: Callable[[object], None] | None = None  # writes a network's weights into the bundle (rank 0)


def train_epoch(net, optimizer, run: TorchRun, key: tuple[int, ...], place: Distributed, device,
                on_batch=None) -> tuple[float, int]:
    """One pass over this process's share of the epoch's batches; (mean loss, images trained)."""
    import torch

    run.train.set_epoch(key)
    count = len(run.train)
    if place.world > 1:  # every process takes the same number of batches (DDP all-reduces each step)
        count -= count % place.world
    mine = list(range(place.rank, count, place.world))
    losses, images = [], 0
    for done, batch in enumerate(prefetched(run.train, mine, run.workers), 1):
        x, y = to_tensor(batch[0], device), torch.from_numpy(np.asarray(batch[1], np.float32)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast(run, device)):
            logits = net(x).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if len(batch) > 2:  # per-sample weights: Keras' sum_over_batch_size reduction
            loss = loss * torch.from_numpy(np.asarray(batch[2], np.float32)).to(device)[:, None]
        loss = loss.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        images += len(y)
        if on_batch is not None and place.chief:
            on_batch(done, len(mine), float(np.mean(losses)))
    if place.world > 1:  # DDP broadcasts rank 0's batch-norm statistics before each step, not after the last
        import torch.distributed as dist

        for buffer in getattr(net, "module", net).buffers():
            dist.broadcast(buffer, 0)
    return float(np.mean(losses)) if losses else float("nan"), images


def autocast(run: TorchRun, device) -> bool:
    return run.mixed_precision == "on" or (run.mixed_precision == "auto" and device.type == "cuda")


def checkpoint_tag(tag: dict) -> dict:
    return {k: (int(v) if isinstance(v, (int, np.integer)) else str(v)) for k, v in tag.items()}


def load_checkpoint(path: Path, tag: dict) -> dict:
    """A checkpoint written by :func:`save_checkpoint`; BundleError if it is another model's."""
    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise BundleError(f"cannot read checkpoint {path}: {exc}") from None
    if data.get("tag") != checkpoint_tag(tag):
        raise BundleError(f"{path} holds weights of another model ({data.get('tag')}), not {checkpoint_tag(tag)}")
    return data


def save_checkpoint(path: Path, tag: dict, net, optimizer=None) -> None:
    """Model (and optimizer) state to ``path`` through a temporary file and a rename."""
    import torch

    from deepfake_cli.files import atomic_write

    data = {"tag": checkpoint_tag(tag), "model": net.state_dict()}
    if optimizer is not None:  # an epoch's checkpoint: also what the next epoch's dropout draws from
        data["optimizer"] = optimizer.state_dict()
        data["rng"] = torch.get_rng_state()
    with atomic_write(path, suffix=".pt") as tmp:
        torch.save(data, str(tmp))


def new_optimizer(net, learning_rate: float):
    import torch

    return torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=learning_rate,
                             weight_decay=WEIGHT_DECAY)


def run_torch_phases(net, run: TorchRun, phases: list[Phase], state: dict, tag: dict, place: Distributed,
                     device) -> dict:
    """train/loop.run_phases for the PyTorch engine: phases, early stopping, a checkpoint per
    epoch (rank 0 writes), resume from ``state``; returns the finished state."""
    import torch

    ckpt = run.checkpoints
    if state["last"]:  # resuming: the weights and random state the last finished epoch left
        last = load_checkpoint(ckpt.path(state["last"]["weights"]), tag)
        net.load_state_dict(last["model"])
        torch.set_rng_state(last["rng"])
    on_batch = getattr(run.on_epoch, "on_batch", None)
    for index in range(state["phase"], len(phases)):
        phase = phases[index]
        if phase.start_from_best and state["phase_epoch"] == 0 and state["best"]:
            net.load_state_dict(load_checkpoint(ckpt.path(state["best"]["file"]), tag)["model"])
        set_trainable(net, not phase.frozen, run.frozen_batchnorm, run.freeze_blocks)
        model = net  # DDP after the trainable set is fixed: it all-reduces the gradients of exactly those
        if place.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(net)
        optimizer = new_optimizer(net, phase.learning_rate)
        if state["phase_epoch"] > 0 and state["last"]:
            optimizer.load_state_dict(load_checkpoint(ckpt.path(state["last"]["weights"]), tag)["optimizer"])
        while state["phase_epoch"] < phase.epochs and state["bad_epochs"] < run.patience:
            clock = time.perf_counter()
            set_trainable(net, not phase.frozen, run.frozen_batchnorm, run.freeze_blocks)
            loss, images = train_epoch(model, optimizer, run, (run.seed, index, state["phase_epoch"]), place,
                                       device, on_batch)
            train_seconds = time.perf_counter() - clock
            metrics = run.evaluate(face_scores(net, run.val, device, run.flip, run.workers))
            step = len(state["history"])
            record = {"round": phase.round, "phase": phase.name, "loss": loss, **metrics,
                      "epoch": sum(1 for r in state["history"] if r["round"] == phase.round) + 1,
                      "images_per_second": images * place.world / train_seconds if train_seconds > 0 else 0.0,
                      "train_mix": run.train.epoch_mix()}
            better = improved(metrics, state["best"])
            state["train_images"] += images * place.world
            state["train_seconds"] += train_seconds
            record["seconds"] = time.perf_counter() - clock
            last = f"epoch-{step:04d}.pt"
            if place.chief:
                save_checkpoint(ckpt.path(last), tag, net, optimizer)
                if better:  # the bundle holds the best weights so far, as the Keras loop's publish_best
                    save_checkpoint(ckpt.path(f"best-{step:04d}.pt"), tag, net)
                    if run.publish is not None:
                        run.publish(net)
            if better:
                state["best"] = {"file": f"best-{step:04d}.pt", "round": phase.round, "epoch": record["epoch"],
                                 "phase": phase.name, **{k: v for k, v in record.items() if k.startswith("val_")}}
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += 1
            state["last"] = {"weights": last}
            state["phase_epoch"] += 1
            state["history"].append(record)
            if place.chief:
                ckpt.write(state)
            barrier(place)
            if run.on_epoch is not None and place.chief:
                run.on_epoch(dict(record, best_val_auc=state["best"]["val_auc"]))
        state["stopped_early"] = state.get("stopped_early", []) + (
            [phase.name] if state["phase_epoch"] < phase.epochs else [])
        state.update(phase=index + 1, phase_epoch=0, bad_epochs=0)
        if place.chief:
            ckpt.write(state)
    check_in_sync(net, place)
    state["processes"] = place.world
    return state


def check_in_sync(net, place: Distributed) -> None:
    """Under several processes, stop with a TrainingDataError unless every process ends with the same
    weights (DDP averages gradients and broadcasts buffers; a fault there would train diverging models)."""
    if place.world == 1:
        return
    import torch
    import torch.distributed as dist

    from deepfake_cli.train import TrainingDataError

    mine = torch.stack([p.detach().double().sum() for p in net.state_dict().values() if p.is_floating_point()])
    low, high = mine.clone(), mine.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    spread = float((high - low).abs().max())
    if spread > 1e-6 * max(1.0, float(mine.abs().max())):
        raise TrainingDataError(f"the {place.world} training processes ended with different weights "
                                f"(largest difference of a tensor's sum: {spread:.3g})")


def publish(net, classifier, variant: int, final_weights: Path, tag: dict) -> None:
    """Port the trained network into train-cnn's Keras classifier and save it as the bundle's weights."""
    from deepfake_cli.nets.efficientnet_lite import port_torch_state

    state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    extractor = next(layer for layer in classifier.layers if hasattr(layer, "layers"))
    port_torch_state(extractor, variant, state)
    classifier.get_layer("score").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    save_weights_atomic(classifier, final_weights, tag)


def train_torch(classifier, run: TorchRun, phases: list[Phase], state: dict, options, input_size: int,
                final_weights: Path, tag: dict) -> dict:
    """Train ``options.backbone`` with PyTorch from ``state`` (fresh or resumed) and publish the best
    weights into ``classifier``'s bundle file; returns the finished loop state."""
    import torch

    place = distributed()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(options.seed)
    net = build_net(options.backbone, input_size, options.weights, options.dropout)
    net = net.to(device).to(memory_format=torch.channels_last)
    run.publish = partial(publish, classifier=classifier, variant=lite_variant(options.backbone),
                          final_weights=final_weights, tag=tag)
    if not state["done"]:
        state = run_torch_phases(net, run, phases, state, tag, place, device)
        if place.chief:
            finish_state(run.checkpoints, state)
        barrier(place)
    return state
