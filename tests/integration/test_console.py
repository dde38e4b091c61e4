"""The web console at / in a real Chromium against a real `files-service serve` on a real Redis.

Each test saves a screenshot of every step into its folder (tmp_path/screenshots), and ends by
checking that no script failed and that no request left for another origin.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core.auth import new_token

from .browser import ConsolePage
from .conftest import Services
from .harness import MiB, ServiceProcess, assert_content, expect

BIG = 200 * MiB
BIG_UPLOAD_SECONDS = 90.0
# An upload on loopback ends too soon to be cut in the middle; the browser sends this fast instead.
THROTTLED_BYTES_PER_SECOND = 40 * MiB


@pytest.fixture
def console(browser, services: Services, tmp_path: Path) -> Iterator[tuple[ConsolePage, ServiceProcess]]:
    service = services.start()
    page = ConsolePage(browser, service.base_url, tmp_path).open()
    yield page, service
    page.assert_clean()


def a_file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def open_bucket(page: ConsolePage, bucket: str) -> None:
    field = page.until(lambda: page.visible("#open-bucket"), "the console")
    field.send_keys(bucket)
    page.click("#open-bucket-form button")
    page.until(lambda: page.visible("#upload-controls"), f"bucket {bucket} to open")


def throttle(page: ConsolePage) -> None:
    speed = THROTTLED_BYTES_PER_SECOND
    page.driver.set_network_conditions(offline=False, latency=0, download_throughput=speed, upload_throughput=speed)


def test_upload_list_download_and_delete_a_file(console, tmp_path):
    page, service = console
    page.shot("empty-service")
    assert "Open service" in page.until(lambda: page.text("#who"), "who the page says I am")
    open_bucket(page, "docs")
    source = a_file(tmp_path / "pick", "report.bin", 3 * MiB + 17)
    page.choose("pick-files", source)
    page.wait_upload("report.bin")
    page.until(lambda: page.listed_keys() == ["report.bin"], "the file to be listed")
    item = page.element('li.file[data-key="report.bin"]')
    facts = item.text
    assert "3.0 MiB" in facts and "application/octet-stream" in facts
    stored = expect(service.api.info("docs", "report.bin"), 200).json()
    assert stored["digest"] in facts and stored["bytes"] == source.stat().st_size
    page.shot("uploaded-and-listed")

    item.find_element("link text", "Download").click()
    saved = page.downloads / "report.bin"
    page.until(lambda: saved.exists() and saved.stat().st_size == source.stat().st_size, "the download to land")
    assert saved.read_bytes() == source.read_bytes()

    item.find_element("xpath", ".//button[text()='Delete']").click()
    dialog = page.until(lambda: page.visible("#confirm-delete"), "the confirmation")
    assert "report.bin" in dialog.text
    page.shot("confirm-delete")
    dialog.find_element("xpath", ".//button[text()='Delete']").click()
    page.until(lambda: page.listed_keys() == [] and page.visible("#empty"), "the file to go from the list")
    assert expect(service.api.info("docs", "report.bin"), 404).json()["code"] == "file_not_found"
    page.shot("deleted")


def test_a_folder_lands_under_its_path_and_is_browsed_like_folders(console, tmp_path):
    page, service = console
    folder = tmp_path / "pick" / "photos"
    contents = {path: a_file(folder, path, 1000 + number) for number, path in enumerate(["a.jpg", "trip/b c.jpg"])}
    open_bucket(page, "media")
    page.choose("pick-folder", folder)
    for key in ("photos/a.jpg", "photos/trip/b_c.jpg"):
        page.wait_upload(key)
    assert sorted(service.api.keys("media")) == ["photos/a.jpg", "photos/trip/b_c.jpg"]
    assert_content(service.api.content("media", "photos/trip/b_c.jpg"), contents["trip/b c.jpg"].read_bytes())
    page.until(lambda: page.folders() == ["photos/"], "the folder at the top")
    page.shot("folder-uploaded")
    page.element("li.folder button").click()

    def inside() -> bool:
        return page.listed_keys() == ["photos/a.jpg"] and page.folders() == ["trip/"]

    page.until(inside, "the folder's contents")
    page.shot("inside-the-folder")
    page.driver.set_window_size(400, 900)
    assert page.element("#pick-files").rect["x"] < 400 and page.visible("li.file .actions button")
    # One column: the uploads' progress comes before the file list, which may be long.
    assert page.element("section.uploads").rect["y"] < page.element("section.files").rect["y"]
    page.shot("narrow-window")
    # A drop beside the list is refused (the browser would leave the page to open the file), one on it is taken.
    dropped_beside, dropped_on_list = page.driver.execute_script(
        """
        const drop = (target) => {
          const event = new DragEvent("drop", { bubbles: true, cancelable: true, dataTransfer: new DataTransfer() });
          target.dispatchEvent(event);
          return event.defaultPrevented;
        };
        return [drop(document.querySelector("header") || document.body), drop(document.querySelector(".files"))];
        """
    )
    assert dropped_beside and dropped_on_list


def test_files_whose_names_a_key_cannot_hold_keep_apart(console, tmp_path):
    """Names in another script, or differing only in characters a key cannot hold, never share a key (one
    would silently replace the other); the name as it was is kept as the file's metadata."""
    page, service = console
    open_bucket(page, "names")
    sources = [
        a_file(tmp_path / "pick", name, 100 + number)
        for number, name in enumerate(["报告.txt", "日本.txt", "a b.txt", "a(b.txt"])
    ]
    page.choose("pick-files", *sources)
    keys = ["_u62a5_u544a.txt", "_u65e5_u672c.txt", "a_b.txt", "a_b-2.txt"]
    for key in keys:
        page.wait_upload(key)
    assert sorted(service.api.keys("names")) == sorted(keys)
    page.until(lambda: sorted(page.listed_keys()) == sorted(keys), "the four files listed")
    page.collect_logs()
    listings = [url for url in page.requested if "/v1/files/names?" in url or url.endswith("/v1/files/names")]
    assert len(listings) <= 2, listings  # the page opened, then once when the batch ended: not once a file
    for key, source in zip(keys, sources, strict=True):
        assert_content(service.api.content("names", key), source.read_bytes())
        assert expect(service.api.info("names", key), 200).json()["metadata"] == {"filename": source.name}
    page.until(lambda: sorted(page.listed_keys()) == sorted(keys), "the four files listed")
    page.shot("names-kept-apart")


def test_keyboard_focus_shows_on_its_own_control_and_long_names_wrap(console, tmp_path):
    page, service = console
    long_key = "a-rather-long-model-name-" + "checkpoint-" * 10 + "final.safetensors"
    service.api.upload("long", long_key, b"weights")
    open_bucket(page, "long")
    body = page.element("body")
    for _ in range(40):  # Tab until the files' picker has the focus
        if page.driver.execute_script("return document.activeElement.id") == "pick-files":
            break
        body.send_keys("\ue004")  # Tab
    outlines = page.driver.execute_script(
        """return ['pick-files', 'pick-folder'].map((id) =>
             getComputedStyle(document.querySelector(`label[for=${id}]`)).outlineStyle)"""
    )
    assert outlines == ["solid", "none"], outlines  # the focused input's label, not the next control
    page.shot("focus-on-upload-files")
    page.element("li.file .actions button.danger").click()
    dialog = page.until(lambda: page.visible("#confirm-delete"), "the confirmation")
    assert page.driver.execute_script("const d = arguments[0]; return d.scrollWidth <= d.clientWidth", dialog)
    page.shot("long-name-in-dialog")


def test_with_tokens_the_page_asks_for_one_and_says_what_a_reader_may_not_do(browser, services, tmp_path):
    reader, entry = new_token("reader", {"*": ["read"]})
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [entry]}))
    service = services.start(FILES_AUTH_TOKENS_FILE=str(tokens))
    page = ConsolePage(browser, service.base_url, tmp_path).open()
    page.until(lambda: page.visible("#sign-in"), "the page to ask for a token")
    page.shot("asks-for-a-token")
    page.sign_in("0" * 64)
    refused = page.until(lambda: page.text("#sign-in-error"), "the wrong token to be refused")
    assert "refused this token" in refused
    page.shot("wrong-token")

    # The refused token is selected: what is typed or pasted next replaces it, rather than adding to it.
    field = page.element("#token")
    field.send_keys(reader)
    page.click("#sign-in-form button")
    assert "Signed in as reader" in page.until(lambda: page.text("#who"), "the console")
    open_bucket(page, "models")
    rights = page.text("#rights")
    assert "may not upload or delete there: it lacks the “write” and “delete” permissions" in rights, rights
    page.choose("pick-files", a_file(tmp_path / "pick", "m.bin", 100))
    told = page.until(lambda: page.text("#status"), "the page to say why it does not upload")
    assert "may not upload" in told and "“write” permission" in told, told
    assert page.uploads() == []
    assert page.driver.execute_script("return document.cookie") == ""
    assert page.driver.execute_script("return sessionStorage.getItem('files-console:token')") == reader
    page.shot("reader-may-not-upload")
    page.assert_clean()


def test_an_upload_survives_a_killed_worker(console, tmp_path):
    page, service = console
    source = a_file(tmp_path / "pick", "big.bin", BIG)
    open_bucket(page, "big")
    throttle(page)
    page.choose("pick-files", source)
    page.until(lambda: (rows := page.uploads()) and BIG // 5 < rows[0]["sent"] < BIG // 2, "the upload to be under way")
    service.kill()
    retrying = page.until(lambda: page.uploads()[0]["state"] == "retrying" and page.uploads()[0], "the page to retry")
    assert "did not answer" in retrying["text"]
    page.shot("worker-killed")
    service.launch()  # the same port, the same shared Redis: the session is still there
    service.wait_ready()
    page.wait_upload("big.bin", timeout=BIG_UPLOAD_SECONDS)
    page.shot("finished-after-restart")
    assert_content(service.api.content("big", "big.bin"), source.read_bytes())
    assert page.kept_sessions() == []


def reloaded_mid_upload(page: ConsolePage, source: Path, sent: int) -> list[dict]:
    """Upload `source` into the bucket "big", slowed down, and reload the page once `sent` bytes went;
    the unfinished uploads the page then offers to resume."""
    open_bucket(page, "big")
    throttle(page)
    page.choose("pick-files", source)
    page.until(lambda: (rows := page.uploads()) and rows[0]["sent"] > sent, "the upload to be under way")
    page.collect_logs()
    page.driver.refresh()
    return page.until(lambda: page.visible("#unfinished") and page.kept_sessions(), "the unfinished upload")


def test_a_reload_mid_upload_resumes_when_the_file_is_chosen_again(console, tmp_path):
    page, service = console
    source = a_file(tmp_path / "pick", "data.bin", BIG // 2)
    kept = reloaded_mid_upload(page, source, BIG // 8)
    assert [(record["name"], record["bucket"], record["key"]) for record in kept] == [("data.bin", "big", "data.bin")]
    assert service.api.offset(kept[0]["id"]) > 0
    assert "data.bin" in page.text("#unfinished-list")
    page.shot("reloaded-mid-upload")
    page.choose("pick-resume", source)
    done = page.wait_upload("data.bin", timeout=BIG_UPLOAD_SECONDS)
    assert done["session"] == kept[0]["id"]
    assert_content(service.api.content("big", "data.bin"), source.read_bytes())
    page.until(lambda: not page.visible("#unfinished"), "the unfinished list to empty")
    page.shot("resumed")


def test_a_file_whose_session_was_lost_says_it_went_again_from_the_start(console, tmp_path):
    """Chosen again after a reload, a file whose session is gone (expired, or lost with a service that
    had no shared Redis) is sent whole again, and the page says so rather than seeming to resume."""
    page, service = console
    source = a_file(tmp_path / "pick", "again.bin", BIG // 4)
    [kept] = reloaded_mid_upload(page, source, BIG // 16)
    assert service.api.http.delete(f"/v1/files/session:{kept['id']}").status_code == 204  # the session lost
    page.choose("pick-resume", source)
    done = page.wait_upload("again.bin", timeout=BIG_UPLOAD_SECONDS)
    assert done["session"] != kept["id"]
    assert "sent again from the start" in done["text"]
    assert_content(service.api.content("big", "again.bin"), source.read_bytes())
    page.shot("sent-again-from-the-start")
