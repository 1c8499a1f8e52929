"""``kawa demo xray``: the X-ray pipeline, end to end, on this machine.

Starts the app on the platform ``kawa demo`` hands over (its buckets, topics, bucket notification, function
and de-identification route); trains and promotes the model as a Kawa job when there is none; uploads
generated radiographs at the rate asked; publishes the simulated radiologist reads of the uploads to the
``outcomes`` topic as they fall due (``reads_coverage: 0`` turns them off); shows live counts; stops on Ctrl-C
or after the duration with a summary read back from the buckets, topics and results table.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import TYPE_CHECKING, Any

from rich.console import Console

from kawa.apps.demo import Background, log_to_file, serve_portal
from kawa.apps.xray.settings import XraySettings

if TYPE_CHECKING:
    from rich.console import RenderableType

    from kawa.apps.plugin import Declared, DemoOptions
    from kawa.apps.xray.stack import Counts, XrayStack
    from kawa.platform import Platform

console = Console()

DEFAULT_CORRUPT = 0.01
"""Share of damaged uploads when the demo is not told: a few, to show dead-lettering."""


POOL_IMAGES = 64
POOL_ABOVE_RATE = 10.0


def demo(platform: Platform, declared: Declared, options: DemoOptions) -> int:
    """Run the X-ray pipeline on ``platform``: upload → notify → assess risk → PHI-free outputs, live."""
    from kawa.errors import ConfigError

    base: XraySettings = declared.settings
    changes: dict[str, Any] = {}
    if options.corrupt is not None:
        changes["corrupt_fraction"] = options.corrupt
    elif "corrupt_fraction" not in base.model_fields_set:  # not in the settings either: show a few
        changes["corrupt_fraction"] = DEFAULT_CORRUPT
    if options.rate is not None:
        changes["rate"] = options.rate
    if options.train_count is not None:
        changes["train_images"] = options.train_count
    try:
        settings = XraySettings.model_validate({**base.model_dump(), **changes})
    except ValueError as exc:
        raise ConfigError(f"invalid X-ray settings:\n{exc}") from None
    _run(platform, settings, options)
    return 0


def _run(platform: Platform, settings: XraySettings, options: DemoOptions) -> None:
    from rich.live import Live

    from kawa.apps.xray.generator import Generator
    from kawa.apps.xray.stack import XrayStack

    config = platform.config
    duration = options.duration
    log_file = log_to_file(platform, "xray")
    console.print(
        f"[bold]Kawa X-ray demo[/] — home [bold]{config.home}[/], log [bold]{config.log.uri}[/], "
        f"store [bold]{config.store.uri}[/]; platform log in {log_file}"
    )
    stack = XrayStack(platform, settings)
    with console.status("creating buckets, topics, the bucket notification and the de-identification route"):
        stack.prepare()
    console.print(
        f"  buckets {', '.join(settings.buckets())}; topics {settings.images_topic} "
        f"({settings.partitions} partitions), {settings.results_topic}, {settings.dead_letter_topic}"
    )
    _ensure_model(stack, options.settings_file)
    server = None
    reads = None
    try:
        with console.status("starting the risk-assessment function and the de-identification route"):
            stack.start()
        if options.portal:
            server = serve_portal(platform, console)
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        prefix = f"scans/{run_id}/"
        # Drawing a radiograph costs more CPU than the pipeline's work on it (~55 ms): above a few images/s
        # the uploader cycles through prepared images (every upload is still its own object and event).
        pool = POOL_IMAGES if settings.rate > POOL_ABOVE_RATE else 0
        with console.status(f"drawing {pool} radiographs to upload in turn" if pool else "starting the uploader"):
            generator = Generator(settings, store=stack.store, prefix=prefix, pool=pool)
        reads = _start_reads(stack, settings)
        on_upload = reads[0].add if reads is not None else None
        uploader = Background(
            lambda stop: generator.run(
                rate=settings.rate, duration=duration or None, count=options.count, stop=stop, on_upload=on_upload
            ),
            "xray-generator",
        ).start()
        pace = _Pace(settings.rate, generator)
        console.print(
            f"uploading to [bold]{settings.incoming_bucket}/{prefix}[/], asking for {settings.rate:g} images/s"
            + (f" for {duration:g} s" if duration else "")
            + " — Ctrl-C stops"
        )
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` and service managers stop it like Ctrl-C
        try:
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                while uploader.running(timeout=1.0):
                    live.update(_view(stack.counts(prefix), settings, pace, duration))
        except KeyboardInterrupt:
            pass  # Ctrl-C ends the uploads; what was uploaded still finishes below
        finally:
            signal.signal(signal.SIGTERM, previous)
        console.print()
        uploader.finish()  # the last upload is recorded before anything is counted
        pace.finish()
        shortfall = pace.shortfall()
        if shortfall:
            console.print(f"[yellow]{shortfall}[/]")
        counts = _drain(stack, prefix, len(generator.uploads))
        _summary(counts, generator.uploads, settings, pace, stack)
    finally:
        if reads is not None:
            _stop_reads(reads)
        with console.status("stopping (draining in-flight images)"):
            if server is not None:
                server.stop()
            stack.stop()


def _start_reads(stack: XrayStack, settings: XraySettings) -> tuple[Any, Background] | None:
    """The radiologist reads of this run's uploads, published by a daemon thread; None when switched off."""
    if settings.reads_coverage <= 0:
        return None
    from kawa.apps.xray.reads import RadiologistReads

    reads = RadiologistReads(stack.log, settings)
    return reads, Background(reads.run, "xray-reads").start()


def _stop_reads(running: tuple[Any, Background]) -> None:
    reads, publisher = running
    publisher.finish(timeout=5.0)
    console.print(
        f"radiologist reads: {reads.published:,} published to [bold]{reads.topic}[/] "
        f"({reads.settings.reads_coverage:.0%} of the images, ~{reads.settings.reads_delay_s:g} s after upload); "
        f"{reads.waiting:,} were due after the demo stopped"
    )
    reads.close()


class _Pace:
    """The upload rate reached against the one asked for, and why it falls short when it does."""

    def __init__(self, asked: float, generator: Any) -> None:
        self.asked = asked
        self.generator = generator
        self.began = time.monotonic()
        self.ended: float | None = None

    def finish(self) -> None:
        self.ended = time.monotonic()

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.began

    @property
    def uploaded(self) -> int:
        return len(self.generator.uploads)

    @property
    def achieved(self) -> float:
        return self.uploaded / max(self.elapsed, 1e-9)

    def short(self) -> bool:
        """Well below the rate asked, once long enough to tell (a second in, or a few uploads)."""
        return self.elapsed >= 2.0 and self.achieved < 0.9 * self.asked

    def shortfall(self) -> str:
        """'' when the rate asked was reached; else what was reached and why not more."""
        if not self.short():
            return ""
        return (
            f"uploaded {self.achieved:.1f}/s of the {self.asked:g}/s asked: generating and storing one image "
            f"takes {self.per_image_ms():,.0f} ms here, and the uploader shares {_cores()} with the pipeline "
            "(ask for less with --rate)"
        )

    def per_image_ms(self) -> float:
        return 1000 * self.elapsed / max(self.uploaded, 1)


def _cores() -> str:
    cores = os.cpu_count() or 1
    return f"{cores} CPU core{'s' if cores != 1 else ''}"


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _ensure_model(stack: XrayStack, settings_file: str | None) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    version = stack.model_version()
    ref = stack.settings.model_ref
    if version is not None:
        console.print(f"model [bold]{ref}[/] → version {version}")
        return
    console.print(f"no model at [bold]{ref}[/]: training one as a Kawa job (kawa.apps.xray.train:train)")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        from kawa.apps.xray.jobs import run_training_job

        result = run_training_job(stack.config, stack.settings, progress=report, settings_file=settings_file)
    console.print(
        f"trained [bold]{result.get('model')}[/] v{result.get('version')} in {result.get('seconds')} s "
        f"(job {result.get('job_id')}): held-out AUC {result.get('auc', 0):.3f}, sensitivity "
        f"{result.get('sensitivity', 0):.2f}, specificity {result.get('specificity', 0):.2f}"
        + (f"; promoted to {stack.settings.model_alias}" if result.get("promoted") else "")
    )


def _view(counts: Counts, settings: Any, pace: _Pace, duration: float) -> RenderableType:
    from rich.table import Table

    table = Table(title="X-ray pipeline (live)", show_header=False, min_width=60)
    table.add_column(style="bold")
    table.add_column()
    done = f"{pace.elapsed:,.0f} s" + (f" / {duration:g} s" if duration else "")
    table.add_row("elapsed", done)
    rate = f"{pace.achieved:.1f}/s of the {pace.asked:g}/s asked"
    if pace.short():
        rate = f"[yellow]{rate}: {pace.per_image_ms():,.0f} ms an image, CPU-bound on {_cores()}[/]"
    table.add_row("uploaded", f"{counts.uploaded:,}  ({rate})")
    behind = counts.uploaded - counts.processed - counts.dead_lettered
    backlog = f"; {behind:,} waiting for the function" if behind > max(5, 2 * pace.asked) else ""
    table.add_row("processed", f"{counts.processed:,}  (result rows {counts.results:,}{backlog})")
    table.add_row("anonymized", f"{counts.anonymized:,}")
    table.add_row("dead-lettered", f"{counts.dead_lettered:,} (de-identification route: {counts.deid_dead_lettered:,})")
    total = max(1, sum(counts.labels.values()))
    for label, color in (("Normal", "green"), ("Unsure", "yellow"), ("Pneumonia", "red")):
        n = counts.labels.get(label, 0)
        table.add_row(f"  {label}", f"[{color}]{'█' * round(30 * n / total)}[/] {n:,} ({n / total:.0%})")
    table.add_row("latency p50 / p99", f"{_ms(counts.e2e_p50_ms)} / {_ms(counts.e2e_p99_ms)}  (upload → result row)")
    table.add_row("replicas", f"{counts.replicas}  ({counts.rate_per_s:.1f} images/s)")
    versions = ", ".join(f"v{v}: {n:,}" for v, n in sorted(counts.versions.items())) or "-"
    table.add_row("model", f"{settings.model_ref}  ({versions})")
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _drain(stack: XrayStack, prefix: str, uploaded: int) -> Counts:
    """Wait until every upload of this run was assessed (its processed object *and* its result row, written
    after the object) or dead-lettered, and anonymized; the last snapshot, which the summary shows."""

    def finished(c: Counts) -> bool:
        # The bucket may hold one more object than the generator recorded: a put that Ctrl-C interrupted
        # after the object was stored. It is in flight like the others, so wait for it too.
        target = max(uploaded, c.uploaded)
        return (
            c.processed + c.dead_lettered >= target
            and c.results + c.dead_lettered >= target
            and c.anonymized + c.deid_dead_lettered >= target
        )

    try:
        with console.status(f"finishing the {uploaded:,} uploaded images"):
            return stack.wait_until(finished, timeout=120, poll_s=0.5, prefix=prefix)
    except KeyboardInterrupt:
        console.print("[yellow]stopped without waiting for in-flight images[/]")
        return stack.counts(prefix)


def _summary(counts: Counts, uploads: list[Any], settings: Any, pace: _Pace, stack: XrayStack) -> None:
    from rich.table import Table

    corrupt = sum(1 for u in uploads if u.corrupt)
    images = len(uploads) - corrupt
    table = Table(title="summary (read back from the buckets, topics and results table)", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("uploaded", f"{counts.uploaded:,} objects ({images:,} images, {corrupt:,} damaged)")
    table.add_row("processed", f"{counts.processed:,} annotated PHI-free images, {counts.results:,} result rows")
    table.add_row("anonymized", f"{counts.anonymized:,} de-identified images")
    table.add_row(
        "dead-lettered",
        f"{counts.dead_lettered:,} by the function (reasons on "
        f"{settings.dead_letter_topic}), {counts.deid_dead_lettered:,} by the route "
        f"({settings.deid_dead_letter_topic})",
    )
    table.add_row("risk", ", ".join(f"{k} {v:,}" for k, v in sorted(counts.labels.items())) or "-")
    table.add_row("latency p50 / p99", f"{_ms(counts.e2e_p50_ms)} / {_ms(counts.e2e_p99_ms)}")
    table.add_row(
        "upload rate",
        f"{pace.achieved:.1f} images/s of the {pace.asked:g}/s asked, over {pace.elapsed:,.0f} s"
        + (" (short: see above)" if pace.short() else ""),
    )
    took = time.monotonic() - pace.began
    table.add_row("throughput", f"{counts.results / max(took, 1e-9):.1f} result rows/s over {took:,.0f} s")
    console.print(table)
    agree = (
        counts.uploaded == len(uploads)
        and counts.processed == counts.results == images
        and counts.anonymized == images
        and counts.dead_lettered == counts.deid_dead_lettered == corrupt
    )
    if agree:
        console.print(
            "[green]✓ counts agree[/]: every upload is in the incoming bucket; every image has one "
            "processed object, one result row and one anonymized object; damaged uploads were "
            "dead-lettered"
        )
    else:
        console.print(
            f"[yellow]counts differ[/] (uploads {len(uploads)}, images {images}): some images were "
            "still in flight when the demo stopped; `kawa ls` and the results DB show the rest"
        )
    console.print(f"results DB: {stack.results_url}")
    console.print(
        f"next: [bold]kawa ls {settings.processed_bucket}[/], [bold]kawa consume {settings.results_topic} "
        f"--max 3[/], [bold]kawa models versions {settings.model_name}[/]"
    )
