"""Commands that close the loop (registered by jewelcut.cli): `review` (the sampling plan and
the review page), `calibrate` (the gate the verdicts support) and `regate` (re-decide from
stored scores)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from jewelcut.reviews import GateCalibration, PlanSummary
    from jewelcut.settings import Settings

console = Console()
errors = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("review")(review)
    app.command("calibrate")(calibrate)
    app.command("regate")(regate)


def _settings() -> Settings:
    from jewelcut.logs import configure_logging
    from jewelcut.services import require_database
    from jewelcut.settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    require_database(settings)
    return settings


def _version(settings: Settings, model_version: str | None) -> str:
    from jewelcut.registry import active_model_version

    return model_version or active_model_version(settings)


def review(
    model_version: Annotated[
        str | None, typer.Option(help="Model version to review; default: the active one.")
    ] = None,
    sample: Annotated[
        int, typer.Option(help="Accepted images in the plan (stratified by confidence).")
    ] = 200,
    rejected_share: Annotated[
        float, typer.Option(help="Rejected images just under the gate, as a share of --sample.")
    ] = 0.2,
    near: Annotated[
        float, typer.Option(help="How far under the gate a rejected image may be.")
    ] = 0.05,
    host: Annotated[
        str | None, typer.Option(help="Bind address; default the review_host setting.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port; default the review_port setting.")] = None,
    plan_only: Annotated[
        bool, typer.Option("--plan-only", help="Top the review queue up and exit.")
    ] = False,
) -> None:
    """Top up the version's review plan, then serve the review page.

    It binds 127.0.0.1 by default; bound elsewhere it needs a token (JEWELCUT_REVIEW_TOKEN or
    JEWELCUT_REVIEW_TOKEN_FILE)."""
    from jewelcut.reviews import plan_reviews

    settings = _settings()
    version = _version(settings, model_version)
    try:
        plan = plan_reviews(
            settings, version, accepted=sample, rejected_share=rejected_share, near=near
        )
    except LookupError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    _print_plan(plan)
    if plan_only:
        return
    _serve(settings, host or settings.review_host, port or settings.review_port)


def _print_plan(plan: PlanSummary) -> None:
    console.print(
        f"review plan for {plan.model_version} (gate {plan.gate}): {plan.total} images, "
        f"{sum(plan.added.values())} added now",
        soft_wrap=True,
    )
    for stratum, count in plan.planned.items():
        console.print(f"  {stratum}: {count} (+{plan.added.get(stratum, 0)})", soft_wrap=True)


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from review.app import ReviewConfigError, create_app

    try:
        app = create_app(settings, host)
    except ReviewConfigError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"review page at http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def calibrate(
    model_version: Annotated[
        str | None, typer.Option(help="Model version; default: the active one.")
    ] = None,
    target_precision: Annotated[
        float, typer.Option(min=0.5, max=0.9999, help="Share of accepted cutouts that are clean.")
    ] = 0.98,
    apply: Annotated[
        bool, typer.Option("--apply", help="Store the threshold as the version's gate.")
    ] = False,
) -> None:
    """The lowest gate whose reviewed precision meets the target (95% Wilson lower bound).

    Also: the accept rate it gives on everything decided so far, and how many more reviews would
    let the gate go lower. --apply stores it as the version's gate; workers read it."""
    from jewelcut.reviews import apply_gate, calibrate_gate

    settings = _settings()
    version = _version(settings, model_version)
    try:
        result = calibrate_gate(settings, version, target_precision)
    except LookupError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    _print_calibration(result)
    chosen = result.calibration.chosen
    if not apply:
        return
    if chosen is None:
        errors.print("[red]nothing applied:[/red] no threshold meets the target yet")
        raise typer.Exit(1)
    apply_gate(
        settings,
        version,
        chosen.threshold,
        target_precision=target_precision,
        precision_low=chosen.interval.low,
        reviewed=chosen.reviewed,
    )
    console.print(
        f"applied: the gate of {version} is now {chosen.threshold:.6g} (workers read it from "
        f"their next chunk); `jewelcut regate --model-version {version}` re-decides the images "
        "decided so far",
        soft_wrap=True,
    )


def _rate(result: GateCalibration, accepted: int | None) -> str:
    rate = result.rate(accepted)
    return "-" if rate is None else f"{rate:.1%} of {result.decided}"


def _print_calibration(result: GateCalibration) -> None:
    calibration = result.calibration
    reviewed = calibration.candidates[-1].reviewed if calibration.candidates else 0
    clean = calibration.candidates[-1].clean if calibration.candidates else 0
    console.print(
        f"{result.model_version}: {reviewed} reviewed images within the area bounds "
        f"({clean} clean); target precision {calibration.target} (95% Wilson lower bound); "
        f"current gate {result.current_gate:.6g} accepts {_rate(result, result.accepted_now)}",
        soft_wrap=True,
    )
    chosen = calibration.chosen
    if chosen is None:
        console.print("no threshold meets the target yet", soft_wrap=True)
    else:
        interval = chosen.interval
        console.print(
            f"gate {chosen.threshold:.6g}: precision {interval.estimate:.4f} "
            f"[{interval.low:.4f}, {interval.high:.4f}] over {chosen.reviewed} reviews; "
            f"accepts {_rate(result, result.accepted_chosen)}",
            soft_wrap=True,
        )
    lower = calibration.next_lower
    if lower is not None:
        more = calibration.reviews_for_next_lower
        console.print(
            f"to go lower: at {lower.threshold:.6g} the observed precision is "
            f"{lower.interval.estimate:.4f} over {lower.reviewed} reviews (lower bound "
            f"{lower.interval.low:.4f}); "
            + (f"about {more} more reviews at or above it, as clean as these" if more else "")
            + f" would let the gate go there (accepts {_rate(result, result.accepted_next_lower)})",
            soft_wrap=True,
        )
    elif chosen is not None:
        console.print(
            "no lower threshold's observed precision meets the target: more reviews would only "
            "narrow the interval (about 3x as many halve it)",
            soft_wrap=True,
        )


def regate(
    model_version: Annotated[
        str | None, typer.Option(help="Model version; default: the active one.")
    ] = None,
    min_confidence: Annotated[
        float | None, typer.Option(help="Threshold; default the version's current gate.")
    ] = None,
) -> None:
    """Re-decide the version's decided images at its gate, from stored scores (no inference).

    Decisions, cutouts and previews come out as a fresh run at that gate would record them."""
    from producer.progress import progress_bar
    from worker.regate import regate as regate_version

    settings = _settings()
    version = _version(settings, model_version)
    try:
        with progress_bar(f"regate {version}", None) as bar:
            summary = regate_version(settings, version, min_confidence, on_page=bar.advance)
    except LookupError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(
        f"{version} at gate {summary.min_confidence:.6g}: {summary.examined} decided images, "
        f"{summary.unchanged} unchanged, {summary.now_accepted} now accepted, "
        f"{summary.now_rejected} now rejected, {summary.not_stored} without stored masks "
        f"(left as they were), {len(summary.failed)} failed",
        soft_wrap=True,
    )
    for image_id, error in sorted(summary.failed.items()):
        errors.print(f"[red]failed[/red] {image_id}: {error}", soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)
