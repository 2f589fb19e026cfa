// Template editor: after each edit, render the unsaved text for the chosen user on the server
// (the same renderer and sandbox as a real send) and show each channel's result.
(function () {
  "use strict";
  var form = document.getElementById("template-form");
  if (!form) return;
  var token = form.querySelector("input[name=csrf_token]").value;
  var out = document.getElementById("pv-out");
  var errorEl = document.getElementById("pv-error");
  var seq = 0, timer = null;

  function params() {
    var text = document.getElementById("pv-params").value, result = {};
    text.split(",").forEach(function (pair) {
      var i = pair.indexOf("=");
      if (i > 0) result[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
    });
    return result;
  }
  function content() {
    var channels = {};
    form.querySelectorAll("fieldset.channel").forEach(function (fs) {
      var ch = fs.dataset.channel;
      if (!fs.querySelector("input[name=use_" + ch + "]").checked) return;
      var fields = {};
      fs.querySelectorAll("[name^='" + ch + "_']").forEach(function (el) {
        if (el.value.trim()) fields[el.name.slice(ch.length + 1)] = el.value;
      });
      channels[ch] = fields;
    });
    return channels;
  }
  function show(data, errors) {
    out.innerHTML = "";
    Object.keys(data).concat(Object.keys(errors)).forEach(function (ch) {
      var box = document.createElement("section");
      box.className = "rendered";
      box.setAttribute("data-rendered", ch);
      var h = document.createElement("h3");
      h.textContent = ch;
      box.appendChild(h);
      if (errors[ch]) {
        var p = document.createElement("p");
        p.className = "field-error";
        p.textContent = errors[ch];
        box.appendChild(p);
      } else {
        Object.keys(data[ch]).forEach(function (f) {
          var v = data[ch][f];
          if (typeof v !== "string") v = JSON.stringify(v);
          if (f === "html") {
            var frame = document.createElement("iframe");
            frame.setAttribute("sandbox", "");  // no scripts, no same origin: the email as text
            frame.setAttribute("title", ch + " " + f);
            frame.srcdoc = v;
            box.appendChild(frame);
          } else {
            var row = document.createElement("p");
            var b = document.createElement("strong");
            b.textContent = f + ": ";
            row.appendChild(b);
            row.appendChild(document.createTextNode(v));
            row.setAttribute("data-field", f);
            box.appendChild(row);
          }
        });
      }
      out.appendChild(box);
    });
  }
  function preview() {
    var mine = ++seq;
    var user = document.getElementById("pv-user").value.trim();
    var ts = document.getElementById("ts-user");
    if (ts) ts.value = user;
    fetch(form.dataset.preview, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": token },
      body: JSON.stringify({ channels: content(), userId: user, params: params(), language: form.querySelector("[name=lang]").value })
    }).then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); }).then(function (res) {
      if (mine !== seq) return;
      if (res[0]) { errorEl.textContent = ""; show(res[1].data, res[1].errors); }
      else { errorEl.textContent = res[1].message || "Cannot preview"; }
    }).catch(function () { if (mine === seq) errorEl.textContent = "Could not reach the server"; });
  }
  function fold() {  // an unused channel shows only its checkbox
    form.querySelectorAll("fieldset.channel").forEach(function (fs) {
      fs.classList.toggle("on", fs.querySelector("input[name=use_" + fs.dataset.channel + "]").checked);
    });
  }
  function changed() { fold(); clearTimeout(timer); timer = setTimeout(preview, 250); }
  fold();
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  document.getElementById("pv-user").addEventListener("input", changed);
  document.getElementById("pv-params").addEventListener("input", changed);
  preview();
})();
