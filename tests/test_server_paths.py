"""No server path leaves the server: everything a remote party receives (webhook payloads, the
Gradio API's JSON answers, job results, zips and their manifests, the enriched script, image files
and their read-back metadata, error messages) is produced here and scanned for the data directory.
The CLI and the library on the server itself still show paths (checked too, so the scan can fail)."""

from __future__ import annotations

import io
import json
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from studio.errors import StudioError
from studio.jobs import JobManager, JobStatus
from studio.types import GenerationRequest
from studio.webhooks import WebhookDispatcher
from tests.fakes.http import FakeServer, Response

SECRET = "whsec-test-0123456789"


class Collecting:
    """A webhook receiver that keeps every body and says when ``expected`` have arrived."""

    def __init__(self, expected: int):
        self.expected, self.bodies, self.done = expected, [], threading.Event()

    def __call__(self, request):
        self.bodies.append(request.body.decode("utf-8"))
        if len(self.bodies) >= self.expected:
            self.done.set()
        return Response(200, {})


def home_spellings(home: Path) -> set[str]:
    return {str(home), str(home.resolve())}


def leaks(outputs: dict[str, str], home: Path) -> dict[str, str]:
    """The outputs that name the data directory, with the first place each does."""
    found = {}
    for name, text in outputs.items():
        for spelling in home_spellings(home):
            at = text.find(spelling)
            if at >= 0:
                found[name] = text[max(0, at - 40): at + len(spelling) + 40]
    return found


def zip_texts(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name).decode("latin-1") for name in archive.namelist()}


def test_nothing_sent_to_a_remote_party_names_a_server_path(echo_studio, studio_home):
    from gradio_ui.endpoints import Actions, Exporter, public_image, result_json

    receiver = Collecting(expected=3)  # two job.progress, then job.completed
    manager = JobManager(echo_studio, webhooks=WebhookDispatcher(lambda: SECRET, base_delay=0.05))
    exporter = Exporter(echo_studio, root=studio_home.parent / "exports")
    try:
        with FakeServer(receiver) as server:
            job = manager.submit("00:01 a lighthouse\n00:02 waves", provider="echo", concurrency=1,
                                 webhook=f"{server.url}/hook")
            final = manager.wait(job.id, timeout=60)
            assert final.status is JobStatus.COMPLETED
            assert receiver.done.wait(30), "the webhooks never came"
        result = echo_studio.generate(GenerationRequest(prompt="a gull", provider="echo", seed=3))
        [record] = result.images
        actions = Actions(echo_studio, exporter)
        outputs = {
            **{f"webhook {i}": body for i, body in enumerate(receiver.bodies)},
            "job result (API form)": json.dumps(manager.result(job.id, public=True)),
            "Gradio /batch_status answer": json.dumps(actions.job_json("local", job.id)),
            "Gradio /generate answer": json.dumps(result_json(result)),
            "Gradio /history item": json.dumps(public_image(record)),
            "Gradio /providers answer": json.dumps(actions.providers()),
            "enriched script": json.dumps(manager.enriched_script(job.id)),
            "image metadata read back (info)": json.dumps(echo_studio.info(record.id), default=str),
            "image file as served": echo_studio.image_bytes(record).decode("latin-1"),
            **{f"job zip: {name}": text for name, text in zip_texts(manager.export_zip(job.id)).items()},
        }
        server_side = json.dumps(manager.result(job.id))  # the CLI's --json, on the server itself
    finally:
        manager.close()
    assert leaks(outputs, studio_home) == {}
    assert leaks({"CLI": server_side}, studio_home)  # the scan does find a path where one is shown
    webhook = json.loads(receiver.bodies[-1])
    assert [image["file"] for image in webhook["images"]] == [Path(r.path).name for r in
                                                             echo_studio.storage.index.get_many(final.items[0].image_ids
                                                                                                + final.items[1].image_ids)]


@pytest.mark.background_errors  # the batch worker logs each failed save (with <data>) on purpose
def test_an_error_naming_a_server_file_reaches_visitors_without_the_path(echo_studio, studio_home, caplog):
    """Saving fails on a broken disk (the images folder is a file): the OSError names the file it
    failed on. The error the caller gets and the batch item's error (read by the Gradio API, the Batch
    page and webhook receivers) are the storage error's own words, with no path at all; the audit
    row and the server log write the data directory as ``<data>``."""
    images = studio_home / "images"
    if images.is_dir():
        shutil.rmtree(images)
    images.write_text("not a folder", encoding="utf-8")
    with pytest.raises(StudioError) as raised:
        echo_studio.generate(GenerationRequest(prompt="a gull", provider="echo", seed=3))
    assert raised.value.kind == "storage_unavailable" and "could not be saved" in raised.value.message, \
        raised.value.message
    assert any("<data>/images" in record.getMessage() for record in caplog.records), caplog.text
    manager = JobManager(echo_studio)
    try:
        job = manager.submit("a lighthouse", provider="echo")
        final = manager.wait(job.id, timeout=60)
        rows = echo_studio.storage.index.connection().execute("SELECT error FROM generations").fetchall()
    finally:
        manager.close()
    assert final.status is JobStatus.FAILED and "could not be saved" in final.items[0].error, final.items[0].error
    outputs = {"error": raised.value.message, "job item error": final.items[0].error,
               "audit rows": json.dumps([tuple(row) for row in rows])}
    assert leaks(outputs, studio_home) == {}
