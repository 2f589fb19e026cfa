// CSV upload into an audience: read the file here, send the userIds in chunks (the server's
// limit per request), and move the progress bar after each chunk the server accepted.
(function () {
  "use strict";
  var box = document.getElementById("upload");
  if (!box) return;
  var token = document.querySelector("input[name=csrf_token]").value;
  var status = document.getElementById("csv-status");
  var bar = box.querySelector(".bar");

  function parse(text) {
    var header = text.split(/\r?\n/)[0].split(",").map(function (c) { return c.trim().replace(/^"|"$/g, ""); });
    var col = header.indexOf("userId");
    var lines = text.split(/\r?\n/);
    var start = col >= 0 || /^user_?id$/i.test(header[0]) ? 1 : 0;
    if (col < 0) col = 0;
    var ids = [];
    for (var i = start; i < lines.length; i++) {
      var cell = (lines[i].split(",")[col] || "").trim().replace(/^"|"$/g, "");
      if (cell) ids.push(cell);
    }
    return ids;
  }
  function progress(done, total) {
    var pct = total ? Math.round(100 * done / total) : 100;
    bar.setAttribute("aria-valuenow", pct);
    bar.querySelector(".fill").style.width = pct + "%";
  }
  document.getElementById("csv-go").addEventListener("click", function () {
    var file = document.getElementById("csv-file").files[0];
    if (!file) { status.textContent = "Choose a file first"; return; }
    file.text().then(function (text) {
      var ids = parse(text), size = Number(box.dataset.chunk), done = 0, joined = 0;
      var ttl = document.getElementById("csv-ttl").value;
      progress(0, ids.length);
      function next() {
        if (done >= ids.length) {
          status.textContent = "Done: " + ids.length + " userIds sent, " + joined + " joined.";
          status.setAttribute("data-done", "1");
          return;
        }
        var chunk = ids.slice(done, done + size);
        fetch(box.dataset.url, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": token },
          body: JSON.stringify({ userIds: chunk, ttlSeconds: ttl || null })
        }).then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); }).then(function (res) {
          if (!res[0]) { status.textContent = "Stopped at " + done + ": " + (res[1].message || "refused"); return; }
          done += chunk.length; joined += res[1].joined || 0;
          progress(done, ids.length);
          status.textContent = done + " of " + ids.length + " sent";
          next();
        }).catch(function () { status.textContent = "Stopped at " + done + ": the server could not be reached"; });
      }
      next();
    });
  });
})();
