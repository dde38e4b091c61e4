// Uploads one file with tus-js-client, as a browser or Node app would, for tests/integration/test_tus_clients.py.
// Usage: node upload.mjs <endpoint> <file> '<options as JSON>'; prints {"url": ..., "requests": ...} when the
// upload succeeded, `requests` counting the requests each origin received, by method.
// Options of this script's, not tus-js-client's:
// - "spreadOver" (a list of origins) sends each request to the next of them in turn: services sharing one
//   Redis and data volume, so that the parts of a parallel upload, and the chunks of each, are written by
//   different processes;
// - "stopAfter" (bytes) stops between two requests once the server has that many, and "cutAfter" (bytes)
//   cuts the connection in the middle of the request that sends the bytes after these: either prints
//   {"url": ..., "interrupted": true}, for a second run to resume the upload (with the option "uploadUrl");
// - "checksum" (sha1, sha256 or md5) gives every request that carries bytes an Upload-Checksum of them, as the
//   tus checksum extension has it (tus-js-client has no option of its own for it: its HTTP stack is the place
//   meant for such additions), and "corruptChecksum" makes the first of them wrong; the result then also
//   says how many requests carried one ("checksummed").
import crypto from "node:crypto";
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, path, json] = process.argv.slice(2);
const { spreadOver, stopAfter, cutAfter, checksum, corruptChecksum, ...options } = JSON.parse(json || "{}");
const requests = {};
let checksummed = 0;
const stack = new tus.DefaultHttpStack();
let turn = 0;
const httpStack = {
  createRequest(method, url) {
    const target = new URL(url);
    if (spreadOver) {
      const origin = new URL(spreadOver[turn++ % spreadOver.length]);
      target.protocol = origin.protocol;
      target.host = origin.host;
    }
    const counts = (requests[target.origin] ??= {});
    counts[method] = (counts[method] ?? 0) + 1;
    const request = stack.createRequest(method, target.toString());
    return checksum ? withChecksum(request) : request;
  },
  getName() {
    return "CountingHttpStack";
  },
};
// The request, whose body, when it has one, goes with its Upload-Checksum.
function withChecksum(request) {
  const send = request.send.bind(request);
  request.send = (body) => {
    if (body && body.length > 0) {
      const hash = crypto.createHash(checksum).update(body);
      if (corruptChecksum && checksummed === 0) hash.update("not the bytes sent");
      request.setHeader("Upload-Checksum", `${checksum} ${hash.digest("base64")}`);
      checksummed += 1;
    }
    return send(body);
  };
  return request;
}

// A Buffer in every case: with uploadLengthDeferred, tus-js-client 4.3.1 reading a Node stream declares
// a full chunk's Content-Length for a shorter last chunk and waits for ever; from a Buffer it works.
const input = fs.readFileSync(path);

function interrupt() {
  upload.abort();
  console.log(JSON.stringify({ url: upload.url, interrupted: true }));
  process.exit(0);
}

const upload = new tus.Upload(input, {
  endpoint,
  retryDelays: [0, 500, 1000],
  httpStack,
  ...options,
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url, requests, checksummed }));
  },
  onChunkComplete(chunkSize, bytesAccepted) {
    if (stopAfter !== undefined && bytesAccepted >= stopAfter) interrupt();
  },
  onProgress(bytesSent) {
    // Strictly more: tus-js-client reports the offset a request starts at before it sends its body.
    if (cutAfter !== undefined && bytesSent > cutAfter) interrupt();
  },
});
upload.start();
