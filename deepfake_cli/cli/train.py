"""`dfd` commands that make models: train-cnn, ensemble, export-features, train-lstm, export-onnx.

Every model they read is found by serve.model_choice.locate_model (the one resolver, which
`predict` and `evaluate` use too); those that write a new bundle put it where
model_dir_to_write says (--models-dir/NAME).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepfake_cli.cli.common import (EpochProgress, JsonOption, ModelsDirOption, QuietOption, RichReporter, ShardOption,
                                     StoreOption, WaitOption, command_line, consoles, handled, import_keras_quietly,
                                     model_or_positional, native_chatter_hidden, open_store, print_json,
                                     print_table_that_fits, render_summary, write_model_cards)
from deepfake_cli.data.shards import parse_shard
from deepfake_cli.nets.models import LSTM_UNITS


# train-cnn's parameters that are not training options: allowed beside --recipe
NOT_TRAINING_OPTIONS = ("model", "recipe", "resume", "list_backbones", "models_dir", "store", "quiet", "as_json",
                        "bagging")


def recipe_options(context: typer.Context, recipe: Path, allowed: tuple[str, ...]):
    """train-cnn's options from a recipe file; a training option also typed on the command line is
    refused (the recipe is the one record of how the model was trained)."""
    from deepfake_cli.errors import OptionsError
    from deepfake_cli.train.crossval import load_recipe

    def given(name: str) -> bool:
        source = context.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    typed = sorted(name for name in context.params if name not in allowed and given(name))
    if typed:
        flags = [next((o for o in p.opts if o.startswith("--")), p.name) for p in context.command.params
                 if p.name in typed]
        raise OptionsError(f"--recipe {recipe} sets every training option: drop {', '.join(flags)} "
                           "(or edit the recipe)")
    return load_recipe(recipe)


@handled
def train_cnn(
    context: typer.Context,
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name (under --models-dir) or directory."),
    backbone: str = typer.Option("efficientnet-lite0", "--backbone", help="The feature extractor: see `dfd "
                                 "train-cnn --list-backbones` (the default's ImageNet weights ship offline)."),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet | none (random start) | PATH to a "
                                "weights file."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Input size.",
                                            show_default="the backbone's native size"),
    epochs: int = typer.Option(20, "--epochs", help="Most epochs of each round."),
    patience: int = typer.Option(5, "--patience", help="Early-stopping patience on validation AUC."),
    rounds: int = typer.Option(2, "--rounds", help="Round 2+ restarts from the previous round's best weights."),
    batch_size: int = typer.Option(32, "--batch-size", help="Faces per training step."),
    learning_rate: float = typer.Option(1e-4, "--lr", help="Adam's learning rate in round 1 (each later round "
                                        "takes a tenth of the one before)."),
    warmup_epochs: int = typer.Option(0, "--warmup-epochs", help="Epochs with a frozen backbone first."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames-per-video", help="Use at most this many faces per video.",
                                            show_default="all"),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flip, shift, colour and compression "
                                 "changes to the training faces."),
    batchnorm: Literal["auto", "frozen", "train"] = typer.Option("auto", "--batchnorm", help="frozen | train | auto (frozen when fine-tuning "
                                  "pretrained weights: small batches would spoil their statistics)."),
    mixed_precision: Literal["auto", "on", "off"] = typer.Option("auto", "--mixed-precision",
                                                                  help="auto: on with a GPU."),
    balance: Literal["label", "dataset"] = typer.Option("label", "--balance", help="label: real and fake weigh the same | dataset: "
                                "every (dataset, label) pair weighs the same, so no dataset's mix is learnt."),
    sampling: Literal["weights", "balanced"] = typer.Option("weights", "--sampling", help="weights: --balance weighs the loss | balanced: "
                                 "it sets how often each face is drawn, so every batch holds each kind alike."),
    shift_augment: bool = typer.Option(False, "--shift-augment", help="With --augment, also shrink-and-enlarge "
                                       "and add noise to faces (small, noisy faces of users' media)."),
    pseudo_fakes: Literal["none", "sbi"] = typer.Option("none", "--pseudo-fakes", help="none | sbi: turn real training faces into "
                                     "self-blended fakes (needs the 68 landmarks `dfd crop` stores)."),
    pseudo_ratio: float = typer.Option(0.5, "--pseudo-ratio", help="Probability that a real training face "
                                       "becomes a pseudo-fake, in [0, 1)."),
    test_time_flip: bool = typer.Option(False, "--test-time-flip", help="Serve the bundle scoring each face and "
                                        "its mirror image (features and scores averaged): export-features, "
                                        "evaluate and predict all do."),
    engine: Literal["keras", "torch"] = typer.Option("keras", "--engine", help="keras: Keras fit | torch: a PyTorch loop (Lite backbones; several processes under torchrun); the same bundle."),
    freeze_blocks: int = typer.Option(0, "--freeze-blocks", help="With --engine torch: keep the stem and the first N "
                                      "blocks' ImageNet weights (faster steps: no backward pass through them)."),
    input_kind: Literal["face", "frame"] = typer.Option("face", "--input", help="face: the stored face crops | frame: the whole "
                                   "stored frames, letterboxed to a square (no face detector needed)."),
    bagging: int = typer.Option(0, "--bagging", help="Train N members on bootstrap resamples of the train "
                                "identity groups (MODEL-bag1 ...) and write the ensemble MODEL averaging them."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights' start, the sampling and the "
                             "augmentation: the same seed and data train the same model."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Take every training option from this JSON "
                                          "recipe ({\"train-cnn\": {option: value}}, as `dfd crossval` reads it); "
                                          "training options given beside it are refused."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    list_backbones: bool = typer.Option(False, "--list-backbones", help="List the backbones (and whether their "
                                        "ImageNet weights ship offline) and exit."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Transfer-learn a Keras CNN on the stored faces (train split; validated on val)."""
    import_keras_quietly("dfd train-cnn")
    from deepfake_cli.nets.backbones import BACKBONES, imagenet_weights_source

    out, err = consoles(quiet)
    if list_backbones:
        table = Table("backbone", "input size", "features", "ImageNet weights")
        for name, spec in BACKBONES.items():
            offline, source = imagenet_weights_source(spec)
            table.add_row(name + (" (default)" if name == backbone else ""), str(spec.input_size),
                          str(spec.feature_dim), ("[green]" if offline else "") + escape(source) + ("[/]" if offline else ""))
        out.print(table)
        return
    from deepfake_cli.serve.model_choice import model_dir_to_write
    from deepfake_cli.train.cnn import CNNTrainOptions, run_chief, train_cnn as run_train

    # bad --batchnorm/--mixed-precision/--balance/--pseudo-*: an OptionsError, exit 2
    options = recipe_options(context, recipe, NOT_TRAINING_OPTIONS) if recipe is not None else CNNTrainOptions(backbone=backbone, weights=weights, input_size=input_size, epochs=epochs,
                              patience=patience, rounds=rounds, batch_size=batch_size,
                              learning_rate=learning_rate, warmup_epochs=warmup_epochs, seed=seed,
                              augment=augment, max_frames_per_video=max_frames, batchnorm=batchnorm,
                              mixed_precision=mixed_precision, balance=balance, pseudo_fakes=pseudo_fakes,
                              pseudo_ratio=pseudo_ratio, test_time_flip=test_time_flip, input=input_kind,
                              sampling=sampling, shift_augment=shift_augment, engine=engine, freeze_blocks=freeze_blocks)

    def on_epoch(info: dict) -> None:
        if not quiet:
            mix = info.get("train_mix", {})
            pseudo = f"  pseudo-fakes {mix['pseudo_fake']:.0%}" if mix.get("pseudo_fake") else ""
            member = f"member {info['member']} " if "member" in info else ""
            err.print(member + "round {round} epoch {epoch}: loss {loss:.4f}  val AUC {val_auc:.4f}  "
                      "val loss {val_loss:.4f}  best {best_val_auc:.4f}  ({seconds:.0f}s)".format(**info) + pseudo,
                      highlight=False)

    with open_store(store, write=False) as opened:
        if bagging:
            from deepfake_cli.train.bagging import train_bagging

            summary = train_bagging(opened, model_dir_to_write(model, models_dir), options, bagging, resume=resume,
                                    on_epoch=on_epoch, command=command_line())
            write_model_cards([Path(m["bundle"]) for m in summary["members"]], out, err, quiet or as_json,
                              write=False)
            if not as_json and not quiet:
                _print_ensemble_table(out, summary)
                return
        else:
            summary = run_train(opened, model_dir_to_write(model, models_dir), options, resume=resume,
                                on_epoch=EpochProgress(err, quiet, on_epoch), command=command_line())
            if not run_chief(options):  # under torchrun, rank 0 alone writes and reports
                return
            write_model_cards([model_dir_to_write(model, models_dir)], out, err, quiet or as_json)
    render_summary(out, "train-cnn", summary, quiet, as_json)


def _print_ensemble_table(out: Console, summary: dict) -> None:
    from deepfake_cli.report.tables import metrics_table

    columns = ("n", "auc", "acc", "logloss", "threshold")  # all of them: --json
    rows = {name: {c: m[c] for c in columns} for name, m in summary["val"].items()}
    print_table_that_fits(out, metrics_table(f"validation ({summary['val_videos']} videos): members and ensemble", rows))
    out.print(f"wrote {escape(summary['ensemble'])} ({summary['method']}; threshold {summary['threshold']:.3f}, uncertain "
              "[{:.3f}, {:.3f}), temperature {:.3f})".format(*summary["uncertain"], summary["temperature"]), highlight=False, soft_wrap=True)


@handled
def ensemble(
    name_argument: Optional[str] = typer.Argument(None, metavar="[NAME]", help="The same as --model (kept for "
                                                  "older scripts).", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Name (under --models-dir) or directory of "
                                        "the ensemble to write.", show_default="the NAME argument"),
    members: str = typer.Option(..., "--members", help="Comma-separated bundles (names or directories)."),
    method: Literal["vote", "weighted", "stack", "blend", "average"] = typer.Option(
        "weighted", "--method", help="How the members' probabilities combine (described above)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the blend's split of validation identities."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Combine bundles into one model, fitted and calibrated on their common validation videos.

    vote: majority of the members' verdicts; weighted: their probabilities averaged with weights
    from validation AUC; stack: a logistic regression on them; blend: the same, fitted on half
    the validation identities and calibrated on the other half; average: the plain mean.
    """
    name = model_or_positional(model, name_argument, "--model")
    import_keras_quietly("dfd ensemble")
    from deepfake_cli.serve.model_choice import locate_model, model_dir_to_write
    from deepfake_cli.train.ensemble_fit import build_ensemble

    out, _ = consoles(quiet)
    names = [m.strip() for m in members.split(",") if m.strip()]
    member_dirs = [locate_model(m, models_dir) for m in names]
    with open_store(store, write=False) as opened:
        summary = build_ensemble(opened, model_dir_to_write(name, models_dir), member_dirs, method, seed=seed,
                                 command=command_line())
    if as_json:
        print_json(summary)
    elif not quiet:
        _print_ensemble_table(out, summary)


@handled
def export_features(
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name or directory."),
    batch_size: int = typer.Option(32, "--batch-size", help="Faces per CNN call."),
    force: bool = typer.Option(False, "--force", help="Recompute features that exist already."),
    wait: bool = WaitOption,
    shard: Optional[str] = ShardOption,
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Store per-frame CNN features and scores of every face sequence under the model's name."""
    import_keras_quietly("dfd export-features")
    from deepfake_cli.serve.model_choice import locate_model
    from deepfake_cli.train.temporal import export_features as run_export

    out, err = consoles(quiet)
    reporter = RichReporter(err, quiet)
    with open_store(store, write=True, wait=wait) as opened:
        try:
            summary = run_export(opened, locate_model(model, models_dir), batch_size=batch_size, force=force,
                                 reporter=reporter, shard=parse_shard(shard))
        finally:
            reporter.finish()
    render_summary(out, "export-features", summary, quiet, as_json)


@handled
def train_lstm(
    model: str = typer.Option("dfd-model", "--model", "-m", help="Bundle name or directory (features exported)."),
    units: int = typer.Option(LSTM_UNITS, "--units", help="BiLSTM units in each direction."),
    epochs: int = typer.Option(30, "--epochs", help="Most epochs."),
    patience: int = typer.Option(5, "--patience", help="Early-stopping patience on validation AUC."),
    batch_size: int = typer.Option(32, "--batch-size", help="Videos per training step."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Adam's learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights' start and the batches' order."),
    pseudo_fakes: Literal["none", "sbi"] = typer.Option("none", "--pseudo-fakes", help="none | sbi: turn real training clips into "
                                     "self-blended fake clips (one blend across a clip's faces; needs 68-point "
                                     "landmarks in the store)."),
    pseudo_ratio: float = typer.Option(0.5, "--pseudo-ratio", help="Probability that a real training clip "
                                       "becomes a pseudo-fake, in [0, 1)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Train the bidirectional LSTM over each video's CNN features, then calibrate it on val."""
    import_keras_quietly("dfd train-lstm")
    from deepfake_cli.serve.model_choice import locate_model
    from deepfake_cli.train.temporal import LSTMTrainOptions, train_lstm as run_train

    out, err = consoles(quiet)
    options = LSTMTrainOptions(units=units, epochs=epochs, patience=patience, batch_size=batch_size,
                               learning_rate=learning_rate, seed=seed, pseudo_fakes=pseudo_fakes,
                               pseudo_ratio=pseudo_ratio)  # bad --pseudo-*: an OptionsError, exit 2

    def on_epoch(info: dict) -> None:
        if not quiet:
            err.print("epoch {epoch}: loss {loss:.4f}  val AUC {val_auc:.4f}  best {best_val_auc:.4f}".format(**info),
                      highlight=False)

    with open_store(store, write=False) as opened:
        bundle_dir = locate_model(model, models_dir, packaged=False)
        summary = run_train(opened, bundle_dir, options, resume=resume,
                            on_epoch=EpochProgress(err, quiet, on_epoch), command=command_line(),
                            reporter=RichReporter(err, quiet))
    write_model_cards([bundle_dir], out, err, quiet or as_json)
    render_summary(out, "train-lstm", summary | summary["calibration"], quiet, as_json)


@handled
def export_onnx(
    model_argument: Optional[str] = typer.Argument(None, metavar="[MODEL]", help="The same as --model (kept for "
                                                   "older scripts).", show_default=False),
    model_option: Optional[str] = typer.Option(None, "--model", "-m", help="Bundle name or directory (an "
                                               "ensemble: each of its members).",
                                               show_default="the MODEL argument"),
    models_dir: Path = ModelsDirOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Write the model's CNN and LSTM as ONNX files, checked against Keras, for a fast `dfd predict`."""
    model = model_or_positional(model_option, model_argument, "--model")
    import_keras_quietly("dfd export-onnx")
    from deepfake_cli.scoring.ensemble import is_ensemble, load_ensemble
    from deepfake_cli.serve.model_choice import locate_model
    from deepfake_cli.train.onnx_export import export_onnx as run_export

    out, _ = consoles(quiet)
    path = locate_model(model, models_dir, packaged=False)  # its ONNX files are written beside it
    bundles = [b.path for b in load_ensemble(path).members] if is_ensemble(path) else [path]
    with native_chatter_hidden():
        records = {str(b): run_export(b) for b in bundles}
    if as_json:
        print_json(records)
        return
    for bundle_dir, record in records.items():
        parts = ", ".join(f"{name} (largest difference from Keras {entry['max_abs_diff']:.1e})"
                          for name, entry in record.items() if isinstance(entry, dict))
        out.print(f"{escape(bundle_dir)}: wrote {parts}", highlight=False, soft_wrap=True)


@handled
def crossval(
    recipe: Path = typer.Option(..., "--recipe", help="JSON recipe: {\"train-cnn\": {option: value}} "
                                "(models/default/recipe.json is the default model's)."),
    out: Path = typer.Option(..., "--out", help="Directory of the folds' bundles, their scores and crossval.json."),
    folds: int = typer.Option(3, "--folds", help="Identity-group folds (per dataset)."),
    cross_dataset: bool = typer.Option(False, "--cross-dataset", help="Also train without each dataset and score it."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run only this fold (fold-0, without-dfdc, "
                                             "...); repeatable. The report covers every fold done so far."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    choose_rule: bool = typer.Option(False, "--choose-rule", help="Score each fold's held-out videos under every "
                                     "clip rule (the --fpv or the --spread frames; mean, median or max), choose "
                                     "the best out of fold, report under it and fit the uncertain band "
                                     "(implied by --calibrate-model, which writes them)."),
    calibrate_model: Optional[str] = typer.Option(None, "--calibrate-model", help="Write the out-of-fold "
                                                  "temperature and the threshold that keeps every dataset's "
                                                  "real-video FPR under 10 % into this bundle (trained by "
                                                  "`train-cnn --recipe` from the same recipe on all the folds)."),
    models_dir: Path = ModelsDirOption,
    store: Optional[Path] = StoreOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
) -> None:
    """Cross-validate a training recipe over identity groups (and across datasets): out-of-fold video
    AUC per dataset, method and compression, mean ± sd over folds, and real-video FPR at
    thresholds fitted out of fold. Resumes at the fold it was in."""
    import_keras_quietly("dfd crossval")
    from deepfake_cli.train.crossval import load_recipe, run_crossval

    out_console, err = consoles(quiet)
    options = load_recipe(recipe)

    def on_epoch(info: dict) -> None:
        if not quiet:
            err.print("round {round} epoch {epoch}: loss {loss:.4f}  val AUC {val_auc:.4f}  "
                      "({seconds:.0f}s)".format(**info), highlight=False)

    def on_fold(name: str, info: dict) -> None:
        if not quiet:
            err.print(f"{name}: {info['videos']} held-out videos scored", highlight=False)

    with open_store(store, write=False) as opened:
        report = run_crossval(opened, out, options, folds=folds, seed=seed, cross_dataset=cross_dataset,
                              only=only, on_fold=on_fold, on_epoch=EpochProgress(err, quiet, on_epoch),
                              choose_rule=choose_rule or calibrate_model is not None)
    if calibrate_model is not None:
        from deepfake_cli.serve.model_choice import locate_model
        from deepfake_cli.train.crossval import apply_calibration

        written = apply_calibration(report, locate_model(calibrate_model, models_dir, packaged=False),
                                    source=command_line())
        report["calibrated_model"] = written
        if not quiet and not as_json:
            err.print(f"{calibrate_model}: temperature {written['temperature']:.4f}, threshold "
                      f"{written['threshold']:.4f} ({written['rule']}, out of fold)", highlight=False)
    if as_json:
        print_json(report)
        return
    if quiet:
        return
    table = Table("videos", "AUC per fold", "mean ± sd", "pooled", "real", "fake")
    for name, row in report["within"].items():
        spread = f"{row['mean']:.3f} ± {row['sd']:.3f}" if row["sd"] is not None else (
            f"{row['mean']:.3f}" if row["mean"] is not None else "-")
        table.add_row(name, " ".join("-" if a is None else f"{a:.3f}" for a in row["folds"]), spread,
                      "-" if row["pooled"] is None else f"{row['pooled']:.3f}", str(row["real"]), str(row["fake"]))
    for dataset, row in report["cross_dataset"].items():
        table.add_row(f"{dataset}, trained without it", "", "", f"{row['auc']:.3f}", "", str(row["videos"]))
    out_console.print(table)
    for name, cut in report["thresholds"].items():
        fpr = ", ".join(f"{d} {r:.0%}" for d, r in cut["real_fpr"].items())
        tpr = ", ".join(f"{d} {r:.0%}" for d, r in cut["fake_tpr"].items())
        out_console.print(f"threshold {name} {cut['threshold']:.3f}: real called fake {fpr}; fakes caught {tpr}",
                          highlight=False)
    if "rule" in report:
        rule = report["rule"]
        rules = ", ".join(f"{name} {row['mean']:.3f} (folds {' '.join(f'{a:.3f}' for a in row['folds'])})"
                          for name, row in rule["rules"].items())
        out_console.print(f"clip rules (mean over datasets of the pooled out-of-fold AUC): {rules}; best "
                          f"{' '.join(rule['best'])}, its gain per fold {rule['gain_over_folds']}; chosen: "
                          + " ".join(rule["chosen"]), highlight=False)
    if "uncertain" in report:
        band = report["uncertain"]
        per = ", ".join(f"{d} {r['uncertain']:.0%} uncertain" for d, r in band["per_dataset"].items())
        accuracy = "-" if band["accuracy_outside"] is None else f"{band['accuracy_outside']:.0%}"
        out_console.print(f"uncertain band [{band['band'][0]:.3f}, {band['band'][1]:.3f}): {band['uncertain']:.0%} "
                          f"of videos ({per}); accuracy outside it {accuracy}", highlight=False)
