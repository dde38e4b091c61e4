// Buckets and their keys, shown by prefix like folders, a page at a time; a file's details and actions.

import { absolute, call, filePath, token } from "./api.js";
import { $, bytes, h, say, when } from "./dom.js";

const PAGE = 200;
// Keys are made of a-zA-Z0-9_-/. only, so "~" sorts after every key below a folder: listing after
// "folder/~" skips the rest of that folder, which the page already shows as one entry.
const PAST_FOLDER = "/~";

export class Browser {
  constructor(rights, onPlaceChange) {
    this.rights = rights;
    this.onPlaceChange = onPlaceChange;
    this.bucket = null;
    this.prefix = "";
    this.after = null;
    this.folders = new Set();
    this.view = 0; // which open() the list on screen belongs to: an answer for an older one is dropped
    $("more").addEventListener("click", () => this.loadPage());
    $("open-bucket-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.open($("open-bucket").value.trim(), "");
    });
  }

  async loadBuckets() {
    const list = $("bucket-list");
    try {
      const { data } = await call("v1/files");
      list.replaceChildren(
        ...data.map(({ name }) =>
          h("li", {}, h("button", { type: "button", class: "link", "data-bucket": name, onclick: () => this.open(name, "") }, name)),
        ),
      );
      $("no-buckets").hidden = data.length > 0;
      if (!this.bucket && data.length) await this.open(data[0].name, "");
    } catch (error) {
      $("files-error").textContent = error.message;
    }
    this.markCurrent();
  }

  markCurrent() {
    for (const button of $("bucket-list").querySelectorAll("button")) {
      if (button.dataset.bucket === this.bucket) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  /** Show the keys of `bucket` under `prefix` (which ends with "/" or is empty). */
  async open(bucket, prefix) {
    this.bucket = bucket;
    this.prefix = prefix;
    this.after = null;
    this.folders = new Set();
    this.view += 1;
    $("file-list").replaceChildren();
    this.renderPlace();
    this.markCurrent();
    this.onPlaceChange(bucket, prefix);
    await this.loadPage();
  }

  refresh() {
    return this.bucket ? this.open(this.bucket, this.prefix) : Promise.resolve();
  }

  renderPlace() {
    const parts = this.prefix.split("/").filter(Boolean);
    const crumbs = [h("button", { type: "button", class: "link", onclick: () => this.open(this.bucket, "") }, this.bucket)];
    parts.forEach((part, index) => {
      const prefix = `${parts.slice(0, index + 1).join("/")}/`;
      crumbs.push(" / ", h("button", { type: "button", class: "link", onclick: () => this.open(this.bucket, prefix) }, part));
    });
    $("place").replaceChildren(...crumbs);
    $("rights").textContent = this.rights.describe(this.bucket);
  }

  async loadPage() {
    const { bucket, prefix, view } = this;
    $("files-error").textContent = "";
    $("more").hidden = true;
    let page;
    try {
      page = await call(`v1/files/${encodeURIComponent(bucket)}`, { query: { prefix, after: this.after, limit: PAGE } });
    } catch (error) {
      $("files-error").textContent = error.message;
      $("empty").hidden = true;
      return;
    }
    if (view !== this.view) return; // the user went elsewhere meanwhile, or the list was refreshed
    const list = $("file-list");
    let last = null;
    for (const file of page.data) {
      const rest = file.key.slice(prefix.length);
      const slash = rest.indexOf("/");
      if (slash < 0) {
        list.append(this.fileItem(file));
        last = file.key;
        continue;
      }
      const folder = rest.slice(0, slash);
      last = `${prefix}${folder}${PAST_FOLDER}`;
      if (this.folders.has(folder)) continue;
      this.folders.add(folder);
      list.append(this.folderItem(folder));
    }
    this.after = last ?? this.after;
    $("more").hidden = !page.has_more;
    $("empty").hidden = list.children.length > 0 || page.has_more;
  }

  folderItem(folder) {
    const prefix = `${this.prefix}${folder}/`;
    return h(
      "li",
      { class: "entry folder" },
      h("button", { type: "button", class: "link name", onclick: () => this.open(this.bucket, prefix) }, `${folder}/`),
      h("span", { class: "muted" }, " folder"),
    );
  }

  fileItem(file) {
    const name = file.key.slice(this.prefix.length);
    const path = `${filePath(file.bucket, file.key)}:content`;
    const metadata = Object.entries(file.metadata ?? {});
    const canDelete = this.rights.may("delete", file.bucket);
    const download = this.rights.open
      ? h("a", { class: "button", href: path, download: name.split("/").pop() }, "Download")
      : h("button", { type: "button", onclick: () => downloadWithToken(path, name) }, "Download");
    return h(
      "li",
      { class: "entry file", "data-key": file.key },
      h("span", { class: "name" }, name),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Size"),
        h("dd", {}, bytes(file.bytes)),
        h("dt", {}, "Type"),
        h("dd", {}, file.mime_type),
        h("dt", {}, "Created"),
        h("dd", {}, when(file.created_at)),
        h("dt", {}, "Digest"),
        h("dd", { class: "digest" }, file.digest),
        metadata.length ? [h("dt", {}, "Metadata"), h("dd", {}, metadataList(metadata))] : [],
      ),
      h(
        "div",
        { class: "actions" },
        download,
        h("button", { type: "button", onclick: () => copyLink(path) }, "Copy link"),
        h(
          "button",
          {
            type: "button",
            class: "danger",
            "aria-disabled": canDelete ? null : "true",
            title: canDelete ? null : "This token lacks the “delete” permission",
            onclick: () => (canDelete ? this.confirmDelete(file) : say(`This token may not delete in “${file.bucket}”: it lacks the “delete” permission.`)),
          },
          "Delete",
        ),
      ),
    );
  }

  confirmDelete(file) {
    const dialog = $("confirm-delete");
    $("confirm-text").textContent = `“${file.key}” in bucket “${file.bucket}” (${bytes(file.bytes)}) will be gone for good.`;
    dialog.returnValue = "";
    dialog.addEventListener(
      "close",
      async () => {
        if (dialog.returnValue !== "delete") return;
        try {
          await call(filePath(file.bucket, file.key), { method: "DELETE" });
          say(`Deleted “${file.key}”.`);
          await this.loadBuckets();
          await this.refresh();
        } catch (error) {
          $("files-error").textContent = error.message;
        }
      },
      { once: true },
    );
    dialog.showModal();
  }
}

function metadataList(entries) {
  return h("ul", { class: "plain metadata" }, ...entries.map(([name, value]) => h("li", {}, `${name}: ${value}`)));
}

async function copyLink(path) {
  const link = absolute(path);
  const needsToken = token.get() ? " Opening it needs a token." : "";
  try {
    await navigator.clipboard.writeText(link);
    say(`Link copied: ${link}.${needsToken}`);
  } catch {
    say(`Copy this link: ${link}.${needsToken}`);
  }
}

/** With tokens on, a plain link would carry no token: fetch the bytes with it and save them. */
async function downloadWithToken(path, name) {
  say(`Downloading “${name}”…`);
  try {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token.get()}` } });
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).detail ?? `status ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: name.split("/").pop(), hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    say(`The download failed: ${error.message}`);
  }
}
