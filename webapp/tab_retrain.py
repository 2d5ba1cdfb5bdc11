"""Retrain tab: a dataset from a folder, a zip or the webcam; training settings; a run with live curves.

One run trains at a time on the server (`webapp.training.TrainingSlot`); a visitor whose run
waits sees their place in line and can cancel it. Cancel stops a running job within a batch;
its best finished epoch is kept only if the visitor asks.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import gradio as gr

from posture.errors import PostureError
from posture.models import list_models
from posture.pretrained import imagenet_available
from posture.train import TrainConfig, train
from webapp import dataset
from webapp.context import AppContext
from webapp.errors import ask, public_message, visitor_errors
from webapp.session import Session
from webapp.training import (CancelledRun, TrainingJob, TrainingSlot, cancelled_text, curves_svg, kept_metrics,
                             results_tables, save_trained, status_line)

__all__ = ["build"]

INIT_IMAGENET, INIT_BUNDLED, INIT_SCRATCH = "ImageNet weights", "bundled checkpoint", "scratch"
LR_CHOICES = ["automatic", "0.03", "0.01", "0.003", "0.001", "0.0003", "0.0001"]
FREEZE_CHOICES = {"automatic": None, "frozen backbone (train the head)": True, "full fine-tune": False}
NEED_DATASET = ("Upload a dataset (a folder or a .zip) or capture pictures with the webcam, "
                "and wait for its check before training.")


def _learning_rate(value: str | float | None) -> float | None:
    if value in (None, "", "automatic"):
        return None
    try:
        lr = float(value)
    except ValueError:
        lr = -1.0
    if not 0.0 < lr < 1.0:
        raise ask(f"Learning rate {value!r}: use a number between 0 and 1 (e.g. 0.001), or 'automatic'.")
    return lr


def build(ctx: AppContext, slot: TrainingSlot) -> dict[str, Any]:
    """Lay out the Retrain tab and wire it; returns the buttons other tabs react to."""
    limits = ctx.settings.limits
    gr.Markdown("Train a model on your own labelled photos: **one sub-folder per class**, the folder name is "
                "the class name. Upload the folder or a `.zip` of it, or take pictures of each class with the webcam.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            with gr.Tabs():
                with gr.Tab("Upload", id="upload"):
                    with gr.Row():
                        folder = gr.File(file_count="directory", type="filepath", height=130,
                                         label="Dataset folder (click to choose)", elem_id="dataset-folder")
                        zip_file = gr.File(file_types=[".zip"], label="…or a .zip of it", height=130,
                                           elem_id="dataset-zip")
                with gr.Tab("Webcam", id="webcam"):
                    with gr.Row(equal_height=False):
                        with gr.Column(min_width=260):
                            capture_class = gr.Dropdown(["normal", "turtle_neck"], value="normal",
                                                        allow_custom_value=True, label="Class to capture into",
                                                        info="Pick or type a class; then press Record",
                                                        elem_id="capture-class")
                            camera = gr.Image(sources=["webcam"], streaming=True, type="pil", label="Webcam",
                                              elem_id="capture-camera")
                        with gr.Column(min_width=220):
                            counts = gr.Markdown("*No pictures captured yet.*", elem_id="capture-count")
                            capture_done = gr.Button("Use the captured pictures", elem_id="capture-done")
                            capture_clear = gr.Button("Delete this class's pictures", size="sm",
                                                      elem_id="capture-clear")
        with gr.Column(scale=2, min_width=260):
            gr.Markdown(f"The layout it needs:\n```\n{dataset.EXPECTED_LAYOUT}\n```", elem_id="dataset-layout")
    folder_layout = gr.Textbox(visible="hidden", elem_id="dataset-folder-layout")
    summary = gr.Markdown(dataset.empty_summary()[0], elem_id="dataset-summary")
    thumbnails = gr.Gallery(label="A few images per class", columns=8, height=200, elem_id="thumbnails")
    skipped = gr.Dataframe(label="Skipped files", headers=["file", "reason"], visible=False, interactive=False,
                           wrap=True, elem_id="skipped")

    with gr.Accordion("Training settings", open=True):
        with gr.Row():
            archs = list_models()
            arch_default = "resnet18" if "resnet18" in archs else archs[0]
            arch = gr.Dropdown(archs, value=arch_default, label="Architecture", elem_id="arch")
            init_choices, init_default = _init_choices(ctx, arch_default)
            init = gr.Radio(init_choices, value=init_default, label="Initialisation", elem_id="init",
                            info="ImageNet is offered when its weights are on this server")
            freeze = gr.Radio(list(FREEZE_CHOICES), value="automatic", label="Backbone",
                              info="automatic: frozen when starting from pretrained weights")
        with gr.Row():
            max_epochs = ctx.settings.max_epochs
            epochs = gr.Slider(1, max_epochs, value=min(10, max_epochs), step=1, label="Epochs", elem_id="epochs")
            lr = gr.Dropdown(LR_CHOICES, value="automatic", allow_custom_value=True, label="Learning rate",
                             elem_id="lr")
            batch_size = gr.Slider(2, 128, value=32, step=1, label="Batch size")
            img_size = gr.Dropdown(["automatic", "64", "96", "128", "160", "224"], value="automatic",
                                   label="Image size (px)", elem_id="img-size")
            val_split = gr.Slider(0.05, 0.5, value=0.2, step=0.05, label="Validation share")
            seed = gr.Number(0, label="Seed", precision=0)
            degrade = gr.Slider(0.0, 1.0, value=0.0, step=0.1, label="Low-quality captures", elem_id="degrade",
                                info="share of training pictures also seen small, blurred and JPEG-compressed "
                                     "(for webcam or phone pictures)")
            restyle = gr.Slider(0.0, 1.0, value=0.0, step=0.1, label="Other drawing styles", elem_id="restyle",
                                info="share of training pictures also seen posterized, solarized, inverted, "
                                     "outlined and the like (for pictures unlike yours)")
            closeup = gr.Slider(0.0, 1.0, value=0.0, step=0.1, label="Close-ups", elem_id="closeup",
                                info="share of training pictures also seen as a head-and-shoulders close-up "
                                     "(for webcam pictures; needs head-and-neck boxes in labels.csv)")
    with gr.Row():
        train_button = gr.Button("Train", variant="primary", elem_id="train")
        cancel_button = gr.Button("Cancel training", variant="stop", visible=False, elem_id="cancel")
    status = gr.Markdown(elem_id="train-status", elem_classes=["train-status"])
    # Cancel's own reply (for API clients): the status line belongs to the training handler alone, so a
    # reply arriving after the handler's last word cannot overwrite it.
    cancel_reply = gr.Textbox(visible=False, elem_id="cancel-reply")
    curves = gr.HTML(elem_id="curves")
    results = gr.Markdown(elem_id="train-results")
    with gr.Row():
        per_class = gr.Dataframe(label="Per class (validation)", interactive=False, visible=False,
                                 elem_id="per-class")
        confusion = gr.Dataframe(label="Confusion matrix (rows: true class)", interactive=False, visible=False,
                                 elem_id="confusion")
    misclassified = gr.Gallery(label="Misclassified validation images (Grad-CAM of the predicted class)",
                               columns=4, fit_columns=False, allow_preview=False, object_fit="contain",
                               visible=False, elem_id="misclassified")
    with gr.Row():
        keep = gr.Button("Keep this model", variant="primary", visible=False, elem_id="keep-cancelled")
        use_in_predict = gr.Button("Use in Predict", visible=False, elem_id="use-in-predict")
        use_in_compare = gr.Button("Use in Compare", visible=False, elem_id="use-in-compare")
        download = gr.DownloadButton("Download model (.safetensors)", visible=False, elem_id="download-model")

    # ------------------------------------------------------------------ dataset

    dataset_outputs = [summary, thumbnails, skipped, ctx.session]

    def show_dataset(session: Session, unplaced: list[tuple[str, str]] = ()) -> tuple:
        try:
            scan, sources = dataset.current_dataset(session, limits)
        except PostureError as exc:
            session.dataset, session.refusal = None, public_message(exc)
            raise ask(dataset.toast_text(session.refusal)) from exc
        session.dataset = scan
        if scan is None:
            return (*dataset.empty_summary(), session)
        scan.skipped = list(unplaced) + list(scan.skipped)
        return (*dataset.summary(scan, sources), session)

    def checked(session: Session, request: gr.Request, check) -> tuple:
        """Run an upload check (`check` returns files it could not place); a refusal is remembered
        so that the summary can explain it, and the toast gets the short version."""
        session.workdir(request)
        session.upload_root, session.dataset, session.refusal = None, None, ""
        try:
            return show_dataset(session, check() or [])
        except PostureError as exc:
            session.refusal = public_message(exc)
            raise ask(dataset.toast_text(session.refusal)) from exc
        except gr.Error as exc:
            session.refusal = exc.message
            raise

    @visitor_errors
    def check_zip(file, session: Session, request: gr.Request):
        """Extract an uploaded .zip (one sub-folder per class) and show what it holds."""
        return checked(session, request, lambda: dataset.check_zip(file, session, limits) and None)

    @visitor_errors
    def check_folder(files, layout: str, session: Session, request: gr.Request):
        """Rebuild an uploaded folder's class sub-folders and show what it holds."""
        return checked(session, request, lambda: dataset.check_folder(files, layout, session, limits))

    def show_refusal(session: Session):
        """Where the summary goes: why the upload was refused and the layout it needs."""
        return dataset.refused_summary(session.refusal) if session.refusal else dataset.empty_summary()

    @visitor_errors
    def remove_upload(session: Session):
        """The visitor removed the uploaded zip or folder: train on what is left (webcam pictures), if anything."""
        session.upload_root, session.refusal = None, ""
        return show_dataset(session)

    @visitor_errors
    def capture(frame, class_name: str | None, session: Session):
        """One webcam picture into the chosen class."""
        if frame is not None:
            dataset.save_capture(frame, class_name, session, limits)
        return _counts_text(session)

    @visitor_errors
    def use_captures(session: Session):
        """Check the dataset with the captured pictures in it."""
        session.refusal = ""
        return show_dataset(session)

    def clear_class(class_name: str | None, session: Session):
        """Delete the chosen class's captured pictures."""
        dataset.clear_captures(session, (class_name or "").strip() or None)
        return _counts_text(session)

    checking = dict(fn=lambda: "*Checking the upload…*", outputs=summary, queue=False, api_visibility="private",
                    show_progress="hidden")
    refusal = dict(fn=show_refusal, inputs=ctx.session, outputs=dataset_outputs[:3], api_visibility="private",
                   show_progress="hidden")
    zip_file.upload(**checking).then(check_zip, [zip_file, ctx.session], dataset_outputs, api_name="check_zip",
                                     show_progress_on=[summary]).failure(**refusal)
    folder.upload(**checking).then(check_folder, [folder, folder_layout, ctx.session], dataset_outputs,
                                   api_name="check_folder", preprocess=False,
                                   show_progress_on=[summary]).failure(**refusal)
    gr.on([zip_file.clear, folder.clear], remove_upload, ctx.session, dataset_outputs, api_name="remove_upload")
    camera.stream(capture, [camera, capture_class, ctx.session], counts, stream_every=0.5, time_limit=None,
                  concurrency_limit=ctx.settings.max_streams, concurrency_id="monitor", show_progress="hidden",
                  api_visibility="private")
    capture_done.click(use_captures, ctx.session, dataset_outputs, api_name="use_captures").failure(**refusal)
    capture_clear.click(clear_class, [capture_class, ctx.session], counts, api_visibility="private")
    def init_for_arch(arch_name: str):
        """Initialisations on offer for an architecture (ImageNet only where the weights are here)."""
        choices, default = _init_choices(ctx, arch_name)
        return gr.Radio(choices=choices, value=default)

    arch.change(init_for_arch, arch, init, api_name="init_choices")

    # ------------------------------------------------------------------ training

    run_outputs = [status, curves, results, per_class, confusion, misclassified, cancel_button, keep,
                   use_in_predict, use_in_compare, download]
    all_outputs = [*run_outputs, *ctx.model_outputs, ctx.session]
    hidden = gr.Button(visible=False)

    def update(*values) -> tuple:
        """A yield of the run: `values` for the first outputs, the rest left as they are."""
        return values + (gr.skip(),) * (len(all_outputs) - len(values))

    def finished(session: Session, name: str, text: str, per_class_df, confusion_df, gallery) -> tuple:
        shown = gr.Button(visible=True)
        return (text, gr.Dataframe(per_class_df, visible=per_class_df is not None),
                gr.Dataframe(confusion_df, visible=confusion_df is not None),
                gr.Gallery(gallery, visible=bool(gallery)), gr.Button(visible=False), hidden, shown, shown,
                gr.DownloadButton(value=str(session.models[name]), visible=True),
                *ctx.model_updates(session), session)

    @visitor_errors
    def train_model(session: Session, arch_name: str, init_name: str, backbone: str, n_epochs: float,
                    rate: str | None, batch: float, size: str, share: float, seed_value: float,
                    degrade_share: float | None, restyle_share: float | None, closeup_share: float | None,
                    request: gr.Request,
                    progress=gr.Progress()):
        """Wait for the training slot (saying so), then train with live curves; Cancel stops either."""
        scan = session.dataset
        if scan is None:
            raise ask(NEED_DATASET)
        if int(n_epochs) > max_epochs:
            raise ask(f"At most {max_epochs} epochs on this server (POSTURE_MAX_EPOCHS).")
        if session.training is not None:
            raise ask("A training run of yours is already waiting or training; cancel it first.")
        config = TrainConfig(arch=arch_name, init=_init_value(ctx, arch_name, init_name),
                             freeze=FREEZE_CHOICES.get(backbone), epochs=int(n_epochs), lr=_learning_rate(rate),
                             batch_size=int(batch), img_size=None if size in (None, "", "automatic") else int(size),
                             val_split=float(share), seed=int(seed_value or 0), degrade=float(degrade_share or 0.0),
                             restyle=float(restyle_share or 0.0), closeup=float(closeup_share or 0.0),
                             device=ctx.settings.device,
                             imagenet_weights=str(ctx.settings.imagenet_weights or "") or None)
        session.workdir(request)
        session.cancelled, job = None, TrainingJob()
        session.training = job
        blank = (None, "", gr.Dataframe(visible=False), gr.Dataframe(visible=False), gr.Gallery(visible=False))
        slot.join(job)
        worker: threading.Thread | None = None
        try:
            yield update("Starting…", *blank, gr.Button(visible=True), hidden, hidden, hidden,
                         gr.DownloadButton(visible=False))
            while not slot.acquire(job, timeout=1.0):
                if job.cancel.is_set():
                    yield update("Cancelled before it started: nothing was trained.", *(gr.skip(),) * 5,
                                 gr.Button(visible=False))
                    return
                ahead = slot.ahead_of(job)
                yield update(f"Waiting for the training slot: {ahead} ahead of you "
                             f"({'you are next' if ahead == 1 else 'one run trains at a time on this server'}). "
                             "Your run starts by itself; Cancel takes you out of the line.")
            events: queue.Queue = queue.Queue()
            outcome: dict[str, Any] = {}
            mistakes = session.new_path("misclassified")

            def work() -> None:
                try:
                    outcome["result"] = train(scan, config, progress=events.put, cancel=job.cancel,
                                              misclassified_dir=mistakes)
                except BaseException as exc:  # noqa: BLE001 - handed to the handler below
                    outcome["error"] = exc
                finally:
                    slot.release(job)  # only now: the slot is free once the training thread has stopped
                    events.put(None)

            worker = threading.Thread(target=work, name="posture-train", daemon=True)
            worker.start()
            history: list[dict] = []
            last, told = 0.0, False
            while (event := events.get()) is not None:
                if job.cancel.is_set() and not told:
                    told = True
                    yield update("Stopping after the current batch…")
                if event.kind == "step" and event.steps:
                    progress((event.step, event.steps), desc=f"epoch {event.epoch}/{event.epochs}", unit="batches")
                    if time.monotonic() - last < 1.0:
                        continue
                if event.kind == "epoch":
                    history.append(event.metrics or {"epoch": event.epoch, "train_loss": event.loss,
                                                     "train_acc": event.acc, "val_loss": event.val_loss,
                                                     "val_acc": event.val_acc})
                    yield update(status_line(event), curves_svg(history))
                else:
                    yield update(status_line(event))
                last = time.monotonic()
        finally:
            if worker is not None and worker.is_alive():  # the visitor left: stop the run, the slot follows
                job.cancel.set()
            elif worker is None:
                slot.release(job)
            session.training = None
        if "error" in outcome:
            exc = outcome["error"]
            if isinstance(exc, PostureError):
                raise ask(public_message(exc, {str(scan.root): "your dataset",
                                               str(ctx.settings.checkpoints): "checkpoints"})) from exc
            raise exc
        result = outcome["result"]
        drawn = curves_svg(result.history or history)
        if result.model is None:
            yield update("Cancelled before the first epoch finished: nothing to keep.", drawn, "", *blank[2:],
                         gr.Button(visible=False), hidden, hidden, hidden, gr.DownloadButton(visible=False))
            return
        if result.cancelled:
            session.cancelled = CancelledRun(result, arch_name)
            yield update(cancelled_text(session.cancelled), drawn, "", *blank[2:], gr.Button(visible=False),
                         gr.Button(visible=True), hidden, hidden, gr.DownloadButton(visible=False))
            return
        name, _ = save_trained(session, result, arch_name, ctx.models.names(session), ctx.settings.mirror)
        text, per_class_df, confusion_df, gallery = results_tables(result)
        out = finished(session, name, f"Saved as **{name}**. {text}", per_class_df, confusion_df, gallery)
        yield ("Training finished.", drawn, *out)

    def cancel_training(session: Session) -> str:
        """Stop this session's run: out of the line if it waits, after the current batch if it trains."""
        job = session.training
        if job is None:
            return "Nothing is training in this session."
        job.cancel.set()
        slot.wake()
        return "Stopping after the current batch…" if slot.ahead_of(job) == 0 else "Leaving the line…"

    @visitor_errors
    def keep_cancelled(session: Session):
        """Save the cancelled run's best finished epoch as a model of this session."""
        run = session.cancelled
        if run is None:
            raise ask("There is no cancelled run to keep.")
        run.result.info.metrics = kept_metrics(run.result.history)
        name, _ = save_trained(session, run.result, run.arch, ctx.models.names(session), ctx.settings.mirror)
        session.cancelled = None
        best = run.result.info.metrics.get("val", {}).get("accuracy")
        score = f" (validation accuracy {best:.1%} at its best epoch)" if isinstance(best, float) else ""
        text = f"Kept as **{name}**{score}: not evaluated further, as training stopped early."
        done = finished(session, name, text, None, None, [])
        return done[:1] + done[4:]

    train_inputs = [ctx.session, arch, init, freeze, epochs, lr, batch_size, img_size, val_split, seed, degrade,
                    restyle, closeup]
    train_event = train_button.click(train_model, train_inputs, all_outputs,
                                     api_name="train", concurrency_limit=None, show_progress_on=[status])
    train_event.then(lambda: gr.Button(visible=False), None, cancel_button, api_visibility="private",
                     show_progress="hidden")
    cancel_button.click(cancel_training, ctx.session, cancel_reply, api_name="cancel_training", queue=False)
    keep.click(keep_cancelled, ctx.session, [results, cancel_button, keep, use_in_predict, use_in_compare,
                                             download, *ctx.model_outputs, ctx.session], api_name="keep_cancelled")
    return {"use_in_predict": use_in_predict, "use_in_compare": use_in_compare}


def _counts_text(session: Session) -> str:
    counts = dataset.capture_counts(session)
    if not any(counts.values()):
        return "*No pictures captured yet.*"
    return "Captured: " + " · ".join(f"`{c}`: {n} pictures" for c, n in counts.items() if n) + \
        ". Press **Use the captured pictures** when every class has some."


def _init_choices(ctx: AppContext, arch: str) -> tuple[list[str], str]:
    choices = []
    if arch == "resnet18" and imagenet_available(ctx.settings.imagenet_weights):
        choices.append(INIT_IMAGENET)
    if arch in ctx.models.bundled():
        choices.append(INIT_BUNDLED)
    choices.append(INIT_SCRATCH)
    return choices, choices[0]


def _init_value(ctx: AppContext, arch: str, init: str) -> str:
    """The TrainConfig.init for a choice of the Initialisation radio."""
    if init == INIT_BUNDLED:
        bundled = ctx.models.bundled()
        if arch not in bundled:
            raise ask(f"There is no bundled {arch} checkpoint to start from; choose another initialisation.")
        return str(bundled[arch])
    values = {INIT_IMAGENET: "imagenet", INIT_SCRATCH: "scratch"}
    if init not in values:
        raise ask(f"Unknown initialisation {init!r}: use {INIT_IMAGENET!r}, {INIT_BUNDLED!r} or {INIT_SCRATCH!r}.")
    return values[init]
