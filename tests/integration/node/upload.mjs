// Uploads one file with tus-js-client, as a browser or Node app would, for tests/integration/test_tus_clients.py.
// Usage: node upload.mjs <endpoint> <file> '<options as JSON>'; prints {"url": ..., "requests": ...} when the
// upload succeeded, `requests` counting the requests each origin received, by method.
// Options of this script's, not tus-js-client's:
// - "spreadOver" (a list of origins) sends each request to the next of them in turn: services sharing one
//   Redis and data volume, so that the parts of a parallel upload, and the chunks of each, are written by
//   different processes;
// - "stopAfter" (bytes) stops between two requests once the server has that many, and "cutAfter" (bytes)
//   cuts the connection in the middle of the request that sends the bytes after these: either prints
//   {"url": ..., "interrupted": true}, for a second run to resume the upload (with the option "uploadUrl").
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, path, json] = process.argv.slice(2);
const { spreadOver, stopAfter, cutAfter, ...options } = JSON.parse(json || "{}");
const requests = {};
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
    return stack.createRequest(method, target.toString());
  },
  getName() {
    return "CountingHttpStack";
  },
};
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
    console.log(JSON.stringify({ url: upload.url, requests }));
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
