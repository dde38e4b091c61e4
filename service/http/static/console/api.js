// The service's HTTP API (docs/api.md), with the token of this tab, and its errors said in words.
// Every URL is relative to the page, so the console works wherever the service is mounted.

const TOKEN = "files-console:token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN),
  set: (value) => sessionStorage.setItem(TOKEN, value),
  clear: () => sessionStorage.removeItem(TOKEN),
};

export function authHeaders() {
  const value = token.get();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

/** An answer other than 2xx, or no answer at all (status 0), with a sentence for a person. */
export class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.code = body?.code ?? null;
    this.body = body ?? {};
  }
}

function describe(status, body) {
  const detail = body?.detail;
  if (status === 0) return "The service did not answer: the network or the service is down.";
  if (status === 401) return "The service refused the token: it does not know it. Check it and sign in again.";
  if (status === 403) return `Not allowed: ${detail ?? "this token lacks the permission"}.`;
  if (status === 503) return `The service is not ready (${detail ?? "unavailable"}); try again in a moment.`;
  return detail ? `${detail} (${status})` : `The service answered ${status}.`;
}

export function filePath(bucket, key) {
  return `v1/files/${encodeURIComponent(bucket)}/${key.split("/").map(encodeURIComponent).join("/")}`;
}

export function sessionPath(id) {
  return `v1/files/session:${encodeURIComponent(id)}`;
}

/** The absolute URL of a path of the API, for links a person copies. */
export function absolute(path) {
  return new URL(path, document.baseURI).href;
}

/** Call the API and return its JSON; throws ApiError. */
export async function call(path, { method = "GET", json, query } = {}) {
  const url = new URL(path, document.baseURI);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null) url.searchParams.set(name, value);
  }
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body, cache: "no-store" });
  } catch {
    throw new ApiError(0);
  }
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

/** What GET /v1/token says this token may do, as a question: may it `action` in `bucket`? */
export class Rights {
  constructor(info) {
    this.name = info.name;
    this.open = info.open;
    this.buckets = info.buckets ?? {};
  }

  may(action, bucket) {
    if (this.open) return true;
    const granted = [...(this.buckets[bucket] ?? []), ...(this.buckets["*"] ?? [])];
    return granted.includes(action);
  }

  /** A sentence: what this token may and may not do in `bucket`. */
  describe(bucket) {
    if (this.open) return "The service is open: anyone may read, upload and delete.";
    const actions = { read: "read", write: "upload", delete: "delete" };
    const allowed = Object.keys(actions).filter((action) => this.may(action, bucket));
    const denied = Object.keys(actions).filter((action) => !this.may(action, bucket));
    const say = (list) => list.map((action) => actions[action]).join(", ").replace(/, ([^,]*)$/, " or $1");
    if (!denied.length) return `This token may read, upload and delete in “${bucket}”.`;
    const may = allowed.length ? `This token may ${say(allowed)} in “${bucket}”` : `This token has no access to “${bucket}”`;
    const lacks = denied.map((action) => `“${action}”`).join(" and ");
    const plural = denied.length > 1 ? "permissions" : "permission";
    return `${may}; it may not ${say(denied)} there: it lacks the ${lacks} ${plural}.`;
  }
}
