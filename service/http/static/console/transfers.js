// The uploads panel: files from the pickers or dropped (folders walked, keys keep their paths), each
// with its progress bar, speed and time left; and the uploads a reload left unfinished, to resume.

import { $, bytes, duration, h, say } from "./dom.js";
import { Upload, distinctKeys, keyFor, pending } from "./uploads.js";

const AT_ONCE = 3;

export class Transfers {
  /** `place()` is the current {bucket, prefix}; `onDone()` runs once no upload is left running or waiting,
   * when some finished since it last ran: the file list is then reloaded once per batch, not once per
   * file (which took the reader back to its first page while a folder went up). */
  constructor(rights, place, onDone) {
    this.rights = rights;
    this.place = place;
    this.onDone = onDone;
    this.queue = [];
    this.running = 0;
    this.finished = 0;
    for (const id of ["pick-files", "pick-folder"]) {
      $(id).addEventListener("change", (event) => {
        this.add([...event.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })));
        event.target.value = "";
      });
    }
    $("pick-resume").addEventListener("change", (event) => {
      this.resume([...event.target.files]);
      event.target.value = "";
    });
    const zone = document.querySelector(".files");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dropping");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dropping"));
    zone.addEventListener("drop", async (event) => {
      event.preventDefault();
      zone.classList.remove("dropping");
      this.add(await droppedFiles(event.dataTransfer));
    });
    // A file dropped beside the list would otherwise make the browser leave the page to open it.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if (!zone.contains(event.target)) event.preventDefault();
      });
    }
    this.showUnfinished();
  }

  /** Upload these {file, path} into the current bucket and prefix. */
  add(items) {
    const { bucket, prefix } = this.place();
    if (!items.length) return;
    if (!bucket) {
      say("Open a bucket first: the files go into the bucket and folder shown.");
      return;
    }
    if (!this.rights.may("write", bucket)) {
      say(`This token may not upload into “${bucket}”: it lacks the “write” permission.`);
      return;
    }
    const keys = distinctKeys(items.map(({ path }) => keyFor(prefix, path)));
    items.forEach(({ file }, index) => this.enqueue(new Upload(file, bucket, keys[index], (upload) => this.render(upload))));
  }

  /** Files chosen again after a reload: each resumes the session kept for it. */
  resume(files) {
    let matched = 0;
    for (const file of files) {
      const record = pending.find(file);
      if (!record) continue;
      matched += 1;
      this.enqueue(new Upload(file, record.bucket, record.key, (upload) => this.render(upload)));
    }
    const missed = files.length - matched;
    if (missed) say(`${missed} of the files chosen match no unfinished upload (same name, size and date).`);
  }

  enqueue(upload) {
    upload.row = uploadRow(upload, () => this.retry(upload));
    $("upload-list").prepend(upload.row.item);
    $("no-uploads").hidden = true;
    this.queue.push(upload);
    this.render(upload);
    this.next();
  }

  next() {
    while (this.running < AT_ONCE && this.queue.length) {
      const upload = this.queue.shift();
      if (upload.state === "cancelled") continue;
      this.running += 1;
      this.showUnfinished();
      upload.run().finally(() => {
        this.running -= 1;
        this.showUnfinished();
        if (upload.state === "done") this.finished += 1;
        this.next();
        if (this.finished && !this.running && !this.queue.length) {
          this.finished = 0;
          this.onDone();
        }
      });
    }
  }

  render(upload) {
    const { progress, text, cancel, retry } = upload.row;
    progress.max = upload.size || 1;
    progress.value = upload.size ? upload.sent : upload.state === "done" ? 1 : 0;
    const percent = upload.size ? Math.floor((100 * upload.sent) / upload.size) : upload.state === "done" ? 100 : 0;
    const parts = [upload.message, `${percent}%`, `${bytes(upload.sent)} of ${bytes(upload.size)}`];
    if (upload.state === "uploading") {
      const speed = upload.speed();
      if (speed) parts.push(`${bytes(speed)}/s`, `${duration(upload.secondsLeft())} left`);
    }
    text.textContent = parts.join(" · ");
    upload.row.item.dataset.state = upload.state;
    upload.row.item.dataset.session = upload.sessionId ?? "";
    cancel.hidden = ["done", "failed", "cancelled"].includes(upload.state);
    retry.hidden = upload.state !== "failed";
  }

  /** Sessions kept in this browser that no upload of this page is sending. */
  showUnfinished() {
    const sending = new Set([...document.querySelectorAll("#upload-list [data-session]")].map((item) => item.dataset.session));
    const left = pending.all().filter((record) => !sending.has(record.id));
    $("unfinished").hidden = left.length === 0;
    $("unfinished-list").replaceChildren(
      ...left.map((record) =>
        h(
          "li",
          {},
          `${record.name} (${bytes(record.size)}) to ${record.bucket}/${record.key} `,
          h(
            "button",
            {
              type: "button",
              class: "link",
              onclick: () => {
                pending.remove(record.id);
                this.showUnfinished();
              },
            },
            "Forget",
          ),
        ),
      ),
    );
  }

  /** Run again an upload that stopped. */
  retry(upload) {
    upload.controller = new AbortController();
    upload.set("waiting", "Waiting");
    this.queue.push(upload);
    this.next();
  }
}

function uploadRow(upload, onRetry) {
  const id = `upload-${crypto.randomUUID()}`;
  const progress = h("progress", { id, max: 1, value: 0 });
  const text = h("span", { class: "upload-text", "aria-live": "polite" });
  const cancel = h("button", { type: "button", onclick: () => upload.cancel() }, "Cancel");
  const retry = h("button", { type: "button", hidden: true, onclick: onRetry }, "Resume");
  const item = h(
    "li",
    { class: "upload" },
    h("label", { for: id, class: "upload-key" }, `${upload.bucket}/${upload.key}`),
    progress,
    h("div", { class: "upload-line" }, text, cancel, retry),
  );
  return { item, progress, text, cancel, retry };
}

/** The files of a drop, folders walked; each {file, path} with the path below the drop. */
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...transfer.files].map((file) => ({ file, path: file.name }));
  const found = [];
  for (const entry of entries) await walk(entry, found);
  return found;
}

async function walk(entry, found) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    found.push({ file, path: entry.fullPath.replace(/^\//, "") });
    return;
  }
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) return;
    for (const child of batch) await walk(child, found);
  }
}
