// The console's start: sign in when the service needs a token, then the buckets, files and uploads.

import { ApiError, Rights, call, token } from "./api.js";
import { Browser } from "./browse.js";
import { $ } from "./dom.js";
import { Transfers } from "./transfers.js";

async function whoAmI() {
  try {
    return new Rights(await call("v1/token"));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

function showSignIn(message) {
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message ?? "";
  $("token").focus();
  $("token").select(); // a refused token is replaced by what is typed or pasted next, not added to
}

function showConsole(rights) {
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = rights.open;
  $("who").textContent = rights.open ? "Open service: no token needed" : `Signed in as ${rights.name}`;
  const browser = new Browser(rights, () => {});
  const transfers = new Transfers(rights, () => ({ bucket: browser.bucket, prefix: browser.prefix }), async () => {
    await browser.loadBuckets();
    await browser.refresh();
  });
  browser.onPlaceChange = (bucket) => ($("upload-controls").hidden = !bucket);
  browser.loadBuckets();
  return transfers;
}

async function start() {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    token.set($("token").value.trim());
    $("sign-in-error").textContent = "";
    try {
      const rights = await whoAmI();
      if (!rights) {
        token.clear();
        showSignIn("The service refused this token: it does not know it. Check it and try again.");
        return;
      }
      $("token").value = "";
      showConsole(rights);
    } catch (error) {
      token.clear();
      showSignIn(error.message);
    }
  });
  $("sign-out").addEventListener("click", () => {
    token.clear();
    location.reload();
  });
  try {
    const rights = await whoAmI();
    if (rights) showConsole(rights);
    else showSignIn(token.get() ? "The token of this tab is no longer valid: sign in again." : "");
  } catch (error) {
    showSignIn(error.message);
  }
}

start();
