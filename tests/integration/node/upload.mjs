// Uploads one file with tus-js-client, as a browser or Node app would, for tests/integration/test_tus_clients.py.
// Usage: node upload.mjs <endpoint> <file> '<options as JSON>'; prints {"url": ...} when the upload succeeded.
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, path, json] = process.argv.slice(2);
const options = JSON.parse(json || "{}");
// A Buffer in every case: with uploadLengthDeferred, tus-js-client 4.3.1 reading a Node stream declares
// a full chunk's Content-Length for a shorter last chunk and waits for ever; from a Buffer it works.
const input = fs.readFileSync(path);
const upload = new tus.Upload(input, {
  endpoint,
  retryDelays: [0, 500, 1000],
  ...options,
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url }));
  },
});
upload.start();
