"""`jewelcut train synth|fit|evaluate|export|publish|run`. Torch is imported inside commands."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from jewelcut.modelcard import Flips
from training.synth.split import Split

if TYPE_CHECKING:
    from jewelcut.modelcard import ModelCard
    from training.config import FitConfig, Preset
    from training.dataset import DataRecipe
    from training.fit import Trainer

console = Console()
train_app = typer.Typer(
    help="Synthesise data, train, evaluate, export and publish models.", no_args_is_help=True
)

PresetOption = Annotated[str | None, typer.Option(help="smoke (CI, tiny) or default.")]


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(train_app, name="train")


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
    )


def preset_or_exit(name: str | None) -> Preset | None:
    from training.config import PRESETS

    if name is None:
        return None
    if name not in PRESETS:
        raise typer.BadParameter(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def passive_openmp() -> None:
    """On a shared CPU, OpenMP threads spinning while they wait made training steps 5-10x
    slower here. Passive waiting must be chosen before torch loads its OpenMP runtime."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# --- synth --------------------------------------------------------------------------------------


@train_app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Dataset folder (with a preset: its parent).")],
    count: int = 1000,
    size: int = 320,
    width: Annotated[int | None, typer.Option(help="Default: --size.")] = None,
    height: Annotated[int | None, typer.Option(help="Default: --size.")] = None,
    seed: int = 1,
    backgrounds: Annotated[
        list[Path] | None, typer.Option(help="Photo folders (hands, rooms, surfaces); repeatable.")
    ] = None,
    objects: Annotated[list[Path] | None, typer.Option(help="Folders of RGBA cutouts.")] = None,
    skimage_photos: bool = True,
    split: Annotated[
        Split | None,
        typer.Option(help="Only the cutouts and photos on this side of the train/dev split."),
    ] = None,
    cutout_share: Annotated[
        float, typer.Option(help="Share of samples made from the cutouts, when there are any.")
    ] = 0.5,
    photo_share: Annotated[
        float, typer.Option(help="Share of backgrounds that are photos, when there are any.")
    ] = 0.45,
    listing_styles: Annotated[
        bool,
        typer.Option(help="Listing styles and newer kinds; off: draw a set defined before them."),
    ] = True,
    no_object: Annotated[
        bool, typer.Option(help="Backgrounds alone (empty masks): a no-jewellery set.")
    ] = False,
    preview: Annotated[
        bool, typer.Option(help="Write OUT/preview.png, a sheet of samples.")
    ] = False,
    preset: PresetOption = None,
) -> None:
    """Write composites (images/, masks/, manifest.json); a preset writes train/, val/, heldout/."""
    from training.dataset import DataRecipe, preset_recipes

    chosen = preset_or_exit(preset)
    common = {
        "background_folders": [str(p) for p in backgrounds or []],
        "cutout_folders": [str(p) for p in objects or []],
        "use_skimage_photos": skimage_photos,
        "split": split,
        "cutout_share": cutout_share,
        "photo_share": photo_share,
        "listing_styles": listing_styles,
        "no_object": no_object,
    }
    if chosen is None:
        write_sets({out: DataRecipe(count, height or size, width or size, seed, **common)}, preview)
    else:
        write_sets(preset_recipes(out, chosen.synth, **common), preview)


def write_sets(recipes: dict[Path, DataRecipe], preview: bool) -> None:
    from training.dataset import read_sample, write_dataset
    from training.preview import write_sheet

    with progress() as bar:
        for folder, recipe in recipes.items():
            task = bar.add_task(f"synth {folder.name}", total=recipe.count, info="")
            manifest = write_dataset(folder, recipe, lambda task=task: bar.advance(task))
            bar.update(
                task,
                info=f"{manifest['photo_backgrounds']} photos, {manifest['cutouts_used']} cutouts",
            )
    for folder, recipe in recipes.items():
        console.print(f"[green]wrote[/] {recipe.count} samples to {folder}")
        if preview:
            names = [f"{i:06d}" for i in range(min(recipe.count, 24))]
            sheet = write_sheet([read_sample(folder, n) for n in names], folder / "preview.png")
            console.print(f"preview sheet: {sheet}")


@train_app.command()
def styles(
    out: Annotated[Path, typer.Argument(help="Folder for one preview sheet per style.")],
    backgrounds: Annotated[
        list[Path] | None, typer.Option(help="Photo folders (hands, surfaces); repeatable.")
    ] = None,
    objects: Annotated[list[Path] | None, typer.Option(help="Folders of RGBA cutouts.")] = None,
    count: Annotated[int, typer.Option(help="Samples per sheet.")] = 12,
    seed: int = 1,
) -> None:
    """Write OUT/STYLE.png for every listing style (synth.listing.STYLES): samples that all
    have that style, the mask outlined."""
    from training.dataset import DataRecipe, make_compositor, sample_rng
    from training.preview import write_sheet
    from training.synth.listing import STYLES

    recipe = DataRecipe(
        count,
        360,
        480,
        seed,
        [str(p) for p in backgrounds or []],
        [str(p) for p in objects or []],
    )
    compositor = make_compositor(recipe)
    for number, style in enumerate(STYLES):
        samples = [
            compositor.sample(sample_rng(seed + number, i), 360, 480, style=style)
            for i in range(count)
        ]
        sheet = write_sheet([(s.rgb, s.mask) for s in samples], out / f"{style}.png")
        console.print(f"{style}: {sheet}")


# --- key-products -------------------------------------------------------------------------------


@train_app.command("key-products")
def key_products(
    out: Annotated[Path, typer.Argument(help="Folder for cutouts/, as-is/, sheets, keying.jsonl.")],
    photos: Annotated[
        list[Path], typer.Option(help="Folders of product photos on plain white; repeatable.")
    ],
    cut_by_frame: Annotated[
        list[Path] | None,
        typer.Option(help="Folders whose pieces may run off the frame's edge; repeatable."),
    ] = None,
    split_with: Annotated[
        list[Path] | None,
        typer.Option(help="Other real cutout folders the train/dev split is judged among."),
    ] = None,
) -> None:
    """Key product photos on white into trusted RGBA cutouts (doubtful masks dropped), and keep
    the photos as they are as train/dev datasets split by object."""
    from training.products import key_folders
    from training.synth.backgrounds import list_photos

    total = len(list_photos([*photos, *(cut_by_frame or [])]))
    with progress() as bar:
        task = bar.add_task("key products", total=total, info="")
        summary = key_folders(
            photos, cut_by_frame or [], out, split_with or [], lambda: bar.advance(task)
        )
    dropped = ", ".join(f"{r} {n}" for r, n in summary.dropped.most_common()) or "none"
    console.print(
        f"[green]kept[/] {summary.kept} of {summary.photos} photos as cutouts in {out / 'cutouts'} "
        f"(train {summary.sides['train']}, dev {summary.sides['dev']}); dropped: {dropped}; "
        f"sheets {out / 'kept.png'}, {out / 'dropped.png'}"
    )


# --- fit ----------------------------------------------------------------------------------------


@train_app.command()
def fit(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (config, checkpoints, log).")],
    config: Annotated[Path | None, typer.Option(help="YAML/JSON run config.")] = None,
    preset: PresetOption = None,
    data: Annotated[
        Path | None, typer.Option(help="With a preset: folder with train/ and val/.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Override the config's steps.")] = None,
    time_budget_s: Annotated[
        float | None, typer.Option(help="Override the config's time_budget_s (training seconds).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from RUN_DIR/checkpoints/last.pt.")
    ] = False,
) -> None:
    """Train the Unet; checkpoints every few minutes; --resume continues a stopped run."""
    fit_config = resolve_fit_config(run_dir, config, preset, data, resume)
    overrides = {"steps": steps, "time_budget_s": time_budget_s}
    fit_config = fit_config.model_copy(
        update={name: value for name, value in overrides.items() if value is not None}
    )
    print_fitted(train_with_progress(fit_config, run_dir, resume))


def print_fitted(trainer: Trainer) -> None:
    state = trainer.state
    console.print(
        f"[green]done[/] step {state.step}, loss {state.last_loss:.4f}, best val IoU "
        f"{state.best_val_iou:.4f}, {state.seconds / 60:.1f} min of training; "
        f"checkpoints in {trainer.checkpoint_dir}"
    )


def resolve_fit_config(
    run_dir: Path, config: Path | None, preset: str | None, data: Path | None, resume: bool
) -> FitConfig:
    from training.config import CONFIG_FILE, load_config

    if resume and (run_dir / CONFIG_FILE).exists():
        return load_config(run_dir / CONFIG_FILE)
    if config is not None:
        return load_config(config)
    chosen = preset_or_exit(preset)
    if chosen is None or data is None:
        raise typer.BadParameter("give --config FILE, or --preset NAME with --data FOLDER")
    return chosen.fit_on(data)


def train_with_progress(fit_config: FitConfig, run_dir: Path, resume: bool) -> Trainer:
    passive_openmp()
    from training.fit import run_fit

    with progress() as bar:
        task = bar.add_task("fit", total=fit_config.steps, info="")

        def on_step(trainer: Trainer) -> None:
            state = trainer.state
            val = "-" if state.last_val_iou is None else f"{state.last_val_iou:.3f}"
            bar.update(task, completed=state.step, info=f"loss {state.last_loss:.4f} val IoU {val}")

        return run_fit(fit_config, run_dir, resume, on_step)


# --- evaluate -----------------------------------------------------------------------------------


@train_app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A checkpoint (.pt) or a model version directory.")],
    data: Annotated[Path, typer.Option(help="Held-out dataset folder (its own seed).")],
    out: Annotated[Path, typer.Option(help="Report JSON; per-image records go beside it.")],
    target_precision: float = 0.98,
    batch_size: int = 8,
    limit: Annotated[int | None, typer.Option(help="Only the first N images.")] = None,
    sheet: Annotated[bool, typer.Option(help="Also write a sheet of the worst images.")] = True,
    input_size: Annotated[
        int | None, typer.Option(help="Run the network at this size instead of the card's.")
    ] = None,
    test_time_flips: Annotated[
        Flips | None,
        typer.Option("--flips", help="Test-time flip averaging instead of the card's."),
    ] = None,
) -> None:
    """IoU, boundary IoU, by size and kind; accept rate and accepted precision at the model's
    gate; risk-coverage and the threshold calibrated for --target-precision."""
    report = evaluate_with_progress(
        model,
        data,
        out,
        target_precision=target_precision,
        batch_size=batch_size,
        limit=limit,
        sheet=sheet,
        input_size=input_size,
        test_time_flips=test_time_flips,
    )
    print_report(report)
    if sheet:
        console.print(f"worst images: {out.with_suffix('.worst.png')}")


def evaluate_with_progress(
    model: Path, data: Path, out: Path, limit: int | None = None, **options: Any
) -> dict[str, Any]:
    passive_openmp()
    from training.dataset import read_manifest
    from training.evaluate import evaluate_model

    total = min(len(read_manifest(data)["samples"]), limit or 10**9)
    with progress() as bar:
        task = bar.add_task("evaluate", total=total, info="")
        return evaluate_model(
            model, data, out, limit=limit, advance=lambda: bar.advance(task), **options
        )


def print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    calibration = report["calibration"]
    console.print(
        f"[bold]{report['images']} images[/]: mean IoU {report['mean_iou']:.4f} "
        f"(raw {report['mean_raw_iou']:.4f}), boundary IoU {report['mean_boundary_iou']:.4f}; "
        f"gate {report['gate']['min_confidence']}: accept rate {report['accept_rate']:.3f}, "
        f"accepted precision {report['accepted_precision']:.4f} ({report['accepted']} accepted; "
        f"{report.get('accept_rate_gate_sized', float('nan')):.3f} of the "
        f"{report.get('gate_sized_images', '?')} whose true area the gate allows); "
        f"calibrated threshold for precision {calibration['target_precision']}: "
        f"{calibration['calibrated_threshold']} "
        f"(accept rate {calibration['calibrated_accept_rate']})"
    )
    table = Table("group", "images", "mean IoU", "boundary IoU", "accept rate", "acc. precision")
    for section in ("by_size", "by_kind"):
        for name, row in report[section].items():
            table.add_row(
                name,
                str(row["images"]),
                f"{row['mean_iou']:.3f}",
                f"{row['mean_boundary_iou']:.3f}",
                f"{row['accept_rate']:.3f}",
                f"{row['accepted_precision']:.3f}",
            )
    console.print(table)


# --- export, publish ----------------------------------------------------------------------------


@train_app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) or model directory.")],
    out: Annotated[Path, typer.Option(help="Parent folder of the version directory.")] = Path(
        "models"
    ),
    name: Annotated[str | None, typer.Option(help="Version name; default: the run's name.")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Evaluation report JSON for the card.")
    ] = None,
    onnx: Annotated[bool, typer.Option(help="Also write model.onnx.")] = False,
    note: Annotated[
        list[str] | None, typer.Option(help="A line for the card's training notes; repeatable.")
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            help="The version's gate threshold, calibrated on a set apart from --report's."
        ),
    ] = None,
    input_size: Annotated[
        int | None,
        typer.Option(help="The size the version runs at; default: the run's input_size."),
    ] = None,
    test_time_flips: Annotated[
        Flips | None,
        typer.Option(
            "--flips", help="The version's test-time flip averaging; default: its source's."
        ),
    ] = None,
    fit_temperature: Annotated[
        Path | None,
        typer.Option(
            help="A synthetic set, apart from the evaluation's, to fit the logit temperature on."
        ),
    ] = None,
    set_report: Annotated[
        list[str] | None,
        typer.Option(help="NAME=REPORT.json of another set for the card (real dev, ...)."),
    ] = None,
) -> None:
    """Write OUT/NAME/weights.safetensors (fp16) and model.json (card with sha256, metrics)."""
    passive_openmp()
    from training.dataset import read_manifest
    from training.export import export_model

    images = len(read_manifest(fit_temperature)["samples"]) if fit_temperature else 0
    bar = progress()
    task = bar.add_task("fit temperature", total=images, info="")
    with bar if images else contextlib.nullcontext():
        directory, card = export_model(
            checkpoint,
            out,
            name,
            report,
            onnx,
            notes=note,
            min_confidence=min_confidence,
            input_size=input_size,
            test_time_flips=test_time_flips,
            temperature_data=fit_temperature,
            advance=lambda: bar.advance(task),
            other_reports=parse_set_reports(set_report or []),
        )
    print_exported(directory, card, fitted_temperature=fit_temperature is not None)


@train_app.command()
def blend(
    checkpoint: Annotated[Path, typer.Argument(help="The fine-tuned run's checkpoint (.pt).")],
    base: Annotated[
        Path, typer.Option(help="The weights it started from: model directory or checkpoint.")
    ],
    weight: Annotated[float, typer.Option(help="The run's share, 0 (base) to 1 (run).")],
    out: Annotated[Path, typer.Option(help="The blended checkpoint (.pt) to write.")],
) -> None:
    """Blend a fine-tuned run with its starting weights (WiSE-FT) into a checkpoint to export."""
    from training.blend import blend_checkpoint

    try:
        blend_checkpoint(checkpoint, base, weight, out)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    console.print(f"[green]blended[/] {weight:g} of {checkpoint} with {base}: {out}")


def print_exported(directory: Path, card: ModelCard, fitted_temperature: bool = False) -> None:
    size_mb = (directory / "weights.safetensors").stat().st_size / 1e6
    temperature = card.calibration.get("logit_temperature") if fitted_temperature else None
    fitted = (
        f", logit temperature {card.logit_temperature} (pixel NLL "
        f"{temperature['pixel_nll_before']:.4f} -> {temperature['pixel_nll_after']:.4f})"
        if temperature
        else ""
    )
    console.print(
        f"[green]exported[/] {card.name} to {directory} "
        f"({size_mb:.1f} MB, sha256 {card.weights_sha256[:12]}…){fitted}"
    )


def parse_set_reports(values: list[str]) -> dict[str, Path]:
    reports = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise typer.BadParameter(f"--set-report takes NAME=REPORT.json, got {value!r}")
        reports[name] = Path(path)
    return reports


@train_app.command()
def publish(
    model_dir: Annotated[Path, typer.Argument(help="An exported model version directory.")],
) -> None:
    """Upload the version to the model storage and register it in the database."""
    from jewelcut.settings import get_settings
    from training.publish import publish_model

    card, uri = publish_model(model_dir, get_settings())
    console.print(f"[green]published[/] {card.name}: {uri} (registered in the database)")


# --- the whole chain ----------------------------------------------------------------------------


@train_app.command("run")
def run_chain(
    out: Annotated[Path, typer.Argument(help="Folder for data, run, report and model.")],
    preset: Annotated[str, typer.Option(help="smoke (CI, tiny) or default.")] = "smoke",
    backgrounds: Annotated[
        list[Path] | None, typer.Option(help="Photo folders; repeatable.")
    ] = None,
) -> None:
    """synth -> fit -> evaluate -> export with a preset (smoke: a few minutes on CPU)."""
    import time

    from training.dataset import preset_recipes
    from training.export import export_model

    chosen = preset_or_exit(preset)
    assert chosen is not None
    started = time.monotonic()
    data, report = out / "data", out / "report.json"
    folders = [str(p) for p in backgrounds or []]
    write_sets(preset_recipes(data, chosen.synth, background_folders=folders), preview=False)
    trainer = train_with_progress(chosen.fit_on(data), out / "run", resume=False)
    print_fitted(trainer)
    best = trainer.checkpoint_dir / "best.pt"
    print_report(evaluate_with_progress(best, data / "heldout", report, sheet=False))
    print_exported(*export_model(best, out / "models", report_path=report))
    console.print(f"[bold green]chain done[/] in {time.monotonic() - started:.0f} s")
