// Resumable uploads over the seed's API: a session (POST v1/files), then chunks with Upload-Offset.
// A failed chunk is retried with backoff from the offset the service reports; the session is kept in
// localStorage, so that after a reload the same file (name, size, lastModified) resumes it.

import { ApiError, authHeaders, call, sessionPath } from "./api.js";

export const CHUNK_BYTES = 64 * 1024 * 1024;
const FIRST_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 8000;
const GIVE_UP_MS = 120000;
const SPEED_WINDOW_MS = 4000;
const RETRYABLE = new Set([0, 408, 409, 429, 500, 502, 503, 504]);
const PENDING = "files-console:uploads";

// Why an upload picked again after a reload may start over.
const RESTARTED = "the earlier session was gone (it expired, or the service restarted without a shared Redis)";

/** Sessions in progress in this browser: {id, name, size, lastModified, bucket, key}. */
export const pending = {
  all() {
    try {
      return JSON.parse(localStorage.getItem(PENDING) ?? "[]");
    } catch {
      return [];
    }
  },
  save(records) {
    localStorage.setItem(PENDING, JSON.stringify(records));
  },
  add(record) {
    this.save([...this.all().filter((other) => other.id !== record.id), record]);
  },
  remove(id) {
    this.save(this.all().filter((record) => record.id !== id));
  },
  /** The session left for this file, into this bucket and key when they are given. */
  find(file, bucket, key) {
    return this.all().find(
      (record) =>
        record.name === file.name &&
        record.size === file.size &&
        record.lastModified === file.lastModified &&
        (bucket === undefined || (record.bucket === bucket && record.key === key)),
    );
  },
};

/**
 * A key the service accepts for a file's path. Another ASCII character becomes "_", as do "." and ".."
 * segments; a character beyond ASCII becomes "_u" and its code point in hex (报告.txt: _u62a5_u544a.txt),
 * so that names in other scripts, which "_" alone would all make the same key, stay apart.
 */
export function keyFor(prefix, path) {
  const segments = path
    .split("/")
    .filter((segment) => segment !== "")
    .map((segment) =>
      Array.from(segment, (character) => {
        if (/[A-Za-z0-9_.-]/.test(character)) return character;
        const point = character.codePointAt(0);
        return point < 128 ? "_" : `_u${point.toString(16)}`;
      }).join(""),
    )
    .map((segment) => (segment === "." || segment === ".." ? "_" : segment));
  return prefix + segments.join("/");
}

/** The keys of files chosen together, made distinct: the second of two that would share one gets "-2". */
export function distinctKeys(keys) {
  const taken = new Set();
  return keys.map((key) => {
    let candidate = key;
    for (let number = 2; taken.has(candidate); number += 1) {
      const slash = key.lastIndexOf("/") + 1;
      const dot = key.lastIndexOf(".");
      const cut = dot > slash ? dot : key.length;
      candidate = `${key.slice(0, cut)}-${number}${key.slice(cut)}`;
    }
    taken.add(candidate);
    return candidate;
  });
}

function sleep(ms, wake) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      wake.removeEventListener("abort", done);
      resolve();
    }
    window.addEventListener("online", done);
    wake.addEventListener("abort", done);
  });
}

/** One POST of bytes to a session, through XMLHttpRequest for its upload progress events. */
function sendChunk(id, offset, blob, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", sessionPath(id));
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.setRequestHeader("Upload-Offset", String(offset));
    request.responseType = "json";
    request.upload.onprogress = (event) => onProgress(event.loaded);
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) resolve(request.response);
      else reject(new ApiError(request.status, request.response));
    };
    request.onerror = () => reject(new ApiError(0));
    request.onabort = () => reject(new DOMException("cancelled", "AbortError"));
    signal.addEventListener("abort", () => request.abort(), { once: true });
    request.send(blob);
  });
}

/** One file on its way into bucket/key; `onChange` hears every change of its state or progress. */
export class Upload {
  constructor(file, bucket, key, onChange) {
    this.file = file;
    this.bucket = bucket;
    this.key = key;
    this.onChange = onChange;
    this.sessionId = pending.find(file, bucket, key)?.id ?? null;
    this.state = "waiting"; // waiting, uploading, retrying, done, failed, cancelled
    this.message = "Waiting";
    this.restarted = false; // the session kept from before was gone: every byte goes again
    this.sent = 0;
    this.samples = [];
    this.controller = new AbortController();
  }

  get size() {
    return this.file.size;
  }

  /** Bytes per second over the last few seconds, or null before there is enough to say. */
  speed() {
    if (this.samples.length < 2) return null;
    const [first, last] = [this.samples[0], this.samples[this.samples.length - 1]];
    const seconds = (last.time - first.time) / 1000;
    return seconds > 0.2 ? (last.bytes - first.bytes) / seconds : null;
  }

  secondsLeft() {
    const speed = this.speed();
    return speed ? (this.size - this.sent) / speed : null;
  }

  progress(bytes) {
    this.sent = bytes;
    const time = performance.now();
    this.samples.push({ time, bytes });
    while (this.samples.length > 2 && time - this.samples[0].time > SPEED_WINDOW_MS) this.samples.shift();
    this.onChange(this);
  }

  set(state, message) {
    this.state = state;
    this.message = message;
    this.onChange(this);
  }

  cancel() {
    this.controller.abort();
    if (this.sessionId) {
      call(sessionPath(this.sessionId), { method: "DELETE" }).catch(() => {});
      pending.remove(this.sessionId);
    }
    this.set("cancelled", "Cancelled");
  }

  /** Upload until done, retrying what may pass later; resolves when done, failed or cancelled. */
  async run() {
    const signal = this.controller.signal;
    let failingSince = null;
    let backoff = FIRST_BACKOFF_MS;
    while (!signal.aborted) {
      try {
        const offset = await this.start();
        this.set("uploading", this.restarted ? `Uploading from the start again: ${RESTARTED}` : "Uploading");
        const file = await this.sendFrom(offset, signal);
        pending.remove(this.sessionId);
        this.result = file;
        this.progress(this.size);
        this.set("done", this.restarted ? "Done (sent again from the start)" : "Done");
        return;
      } catch (error) {
        if (signal.aborted) return;
        if (!(error instanceof ApiError) || !RETRYABLE.has(error.status)) {
          this.set("failed", error.message);
          return;
        }
        failingSince ??= Date.now();
        if (Date.now() - failingSince > GIVE_UP_MS) {
          this.set("failed", `Stopped after two minutes of failures: ${error.message}`);
          return;
        }
        this.set("retrying", `${error.message} Retrying in ${Math.round(backoff / 1000) || 1} s…`);
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
    }
  }

  /** The offset to send from: of the session kept from before, or of a new one. */
  async start() {
    if (this.sessionId) {
      try {
        const session = await call(sessionPath(this.sessionId));
        return session.offset;
      } catch (error) {
        if (error.status !== 404) throw error;
        pending.remove(this.sessionId);
        this.sessionId = null;
        this.restarted = true; // said while it uploads, and when it is done
      }
    }
    const session = await call("v1/files", {
      method: "POST",
      json: {
        bucket: this.bucket,
        key: this.key,
        size: this.size,
        mime_type: this.file.type || "application/octet-stream",
        metadata: { filename: this.file.name.slice(0, 1024) }, // the name as it was, which the key may not be
      },
    });
    this.sessionId = session.id;
    if (session.digest) {
      this.result = session; // an empty file completes at once
      return this.size;
    }
    pending.add({
      id: session.id,
      name: this.file.name,
      size: this.size,
      lastModified: this.file.lastModified,
      bucket: this.bucket,
      key: this.key,
    });
    return session.offset;
  }

  async sendFrom(offset, signal) {
    if (this.result) return this.result;
    this.samples = [];
    this.progress(offset);
    let answer = null;
    while (offset < this.size || answer === null) {
      const end = Math.min(offset + CHUNK_BYTES, this.size);
      const from = offset;
      answer = await sendChunk(this.sessionId, from, this.file.slice(from, end), (loaded) => this.progress(from + loaded), signal);
      offset = answer.digest ? this.size : answer.offset;
      this.progress(offset);
      if (answer.digest) return answer;
      if (offset >= this.size) answer = null; // all bytes are in, but not complete: an empty POST completes it
    }
    return answer;
  }
}
