// GET a URL with Node's `https` module or `fetch`; print `status=N` and the body, or `error=...`.
//     node client.js https|fetch URL
// As an application uses them: no agent, proxy or CA options, only the environment.
"use strict";
const [kind, url] = process.argv.slice(2);

function done(status, body) {
  console.log(`status=${status}`);
  console.log(body);
}

function fail(err) {
  const cause = err && err.cause ? ` (cause: ${err.cause.code || ""} ${err.cause.message})` : "";
  console.log(`error=${String(err && err.message)}${cause}`.replace(/\n/g, " "));
}

if (kind === "https") {
  require("https")
    .get(url, { timeout: 20000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => done(res.statusCode, body));
    })
    .on("timeout", function () {
      this.destroy(new Error("timeout"));
    })
    .on("error", fail);
} else if (kind === "fetch") {
  fetch(url, { signal: AbortSignal.timeout(20000) })
    .then(async (res) => done(res.status, await res.text()))
    .catch(fail);
} else {
  console.error(`unknown client ${kind}`);
  process.exit(2);
}
