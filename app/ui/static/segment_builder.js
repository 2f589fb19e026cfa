// The segment builder: edits the condition tree as nested groups of rows, keeps the form's
// filter_json field in step, and asks the server for the live count after each change.
// Progressive: without JavaScript the "type it" mode still works.
(function () {
  "use strict";
  var form = document.getElementById("segment-form");
  if (!form) return;
  var data = JSON.parse(document.getElementById("segment-data").textContent);
  var readonly = data.readonly;
  var token = form.querySelector("input[name=csrf_token]").value;
  var builderEl = document.getElementById("builder");
  var jsonField = document.getElementById("filter-json");
  var textField = document.getElementById("filter-text");
  var errorEl = document.getElementById("filter-error");
  var seq = 0;

  // Builder operators for attributes: label, the tree's op, and how the value is read.
  var ATTR_OPS = [
    ["is", "is", "text"], ["isNot", "is not", "text"], ["in", "is one of (comma separated)", "list"],
    ["contains", "contains", "text"], ["startsWith", "starts with", "text"],
    ["gt", ">", "number"], ["gte", "≥", "number"], ["lt", "<", "number"], ["lte", "≤", "number"],
    ["between", "between (lo, hi)", "range"], ["exists", "is set", "none"],
    ["notExists", "is not set", "none"], ["before", "before (date)", "text"],
    ["after", "after (date)", "text"], ["withinLast", "within the last (e.g. 7d)", "text"],
    ["moreThan", "more than … ago (e.g. 30d)", "text"]
  ];
  var COUNT_OPS = ["gte", "gt", "eq", "lte", "lt"];

  function group(mode) { return { type: "group", mode: mode || "all", negate: false, children: [] }; }

  // --- the server's tree → builder nodes (null: a shape the builder cannot show) ---------
  function fromTree(t) {
    if (t && typeof t === "object" && !Array.isArray(t)) {
      if (t.all || t.any) {
        var g = group(t.all ? "all" : "any");
        var kids = t.all || t.any;
        for (var i = 0; i < kids.length; i++) {
          var k = fromTree(kids[i]);
          if (k === null) return null;
          g.children.push(k);
        }
        return g;
      }
      if (t.not) {
        var inner = t.not;
        if (inner.attr && inner.op === "textEq") return { type: "attr", attr: inner.attr, op: "isNot", value: String(inner.value) };
        var ng = fromTree(inner);
        if (ng === null) return null;
        if (ng.type !== "group") { var wrap = group("all"); wrap.children.push(ng); ng = wrap; }
        ng.negate = !ng.negate;
        return ng;
      }
      if (t.attr !== undefined) {
        if (t.op === "textEq") return { type: "attr", attr: t.attr, op: "is", value: String(t.value) };
        if (t.op === "textIn") return { type: "attr", attr: t.attr, op: "in", value: t.value.join(", ") };
        if (t.op === "between") return { type: "attr", attr: t.attr, op: "between", value: t.value.join(", ") };
        for (var j = 0; j < ATTR_OPS.length; j++) {
          if (ATTR_OPS[j][0] === t.op) return { type: "attr", attr: t.attr, op: t.op, value: t.value === undefined || t.value === null ? "" : String(t.value) };
        }
        return null;
      }
      if (t.event !== undefined) {
        if (t.where) return null;
        var countOp = "gte", count = "";
        if (t.count) { countOp = Object.keys(t.count)[0]; count = String(t.count[countOp]); }
        return { type: "event", event: t.event, op: t.op, countOp: countOp, count: count, within: t.within || "" };
      }
      if (t.audience !== undefined) return { type: "audience", audience: String(t.audience), op: t.op };
      if (t.channel !== undefined) return { type: "channel", channel: t.channel };
    }
    return null;
  }

  // --- builder nodes → the tree the API takes ----------------------------------------------
  function number(v) { var n = Number(String(v).trim()); return String(v).trim() === "" || isNaN(n) ? String(v) : n; }
  function toTree(n) {
    if (n.type === "group") {
      var body = {}; body[n.mode] = n.children.map(toTree);
      return n.negate ? { not: body } : body;
    }
    if (n.type === "attr") {
      var spec = ATTR_OPS.filter(function (o) { return o[0] === n.op; })[0];
      if (n.op === "is") return { attr: n.attr, op: "textEq", value: n.value };
      if (n.op === "isNot") return { not: { attr: n.attr, op: "textEq", value: n.value } };
      if (n.op === "in") return { attr: n.attr, op: "textIn", value: n.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean) };
      if (n.op === "between") return { attr: n.attr, op: "between", value: n.value.split(",").map(number) };
      if (spec[2] === "none") return { attr: n.attr, op: n.op };
      if (spec[2] === "number") return { attr: n.attr, op: n.op, value: number(n.value) };
      return { attr: n.attr, op: n.op, value: n.value };
    }
    if (n.type === "event") {
      var e = { event: n.event, op: n.op };
      if (n.op === "performed" && String(n.count).trim() !== "") { e.count = {}; e.count[n.countOp] = number(n.count); }
      if (String(n.within).trim() !== "") e.within = n.within.trim();
      return e;
    }
    if (n.type === "audience") return { audience: n.audience, op: n.op };
    return { channel: n.channel, op: "reachable" };
  }

  // --- rendering -----------------------------------------------------------------------------
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    });
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    if (readonly && /INPUT|SELECT|BUTTON/.test(tag.toUpperCase())) e.disabled = true;
    return e;
  }
  function select(label, value, options, onchange) {
    var s = el("select", { "aria-label": label, onchange: function () { onchange(s.value); } });
    options.forEach(function (o) {
      var opt = el("option", { value: o[0], text: o[1] });
      if (o[0] === value) opt.selected = true;
      s.appendChild(opt);
    });
    return s;
  }
  function input(label, value, oninput, attrs) {
    var i = el("input", Object.assign({ "aria-label": label, value: value }, attrs || {}));
    i.value = value;
    i.addEventListener("input", function () { oninput(i.value); });
    return i;
  }

  function renderLeaf(n, parent, index) {
    var row = el("div", { "class": "cond", role: "group", "aria-label": "Condition " + (index + 1) });
    var kind = select("Condition type", n.type, [["attr", "Attribute"], ["event", "Did event"], ["audience", "Audience"], ["channel", "Reachable on"]], function (v) {
      parent.children[index] = blank(v); render(); changed();
    });
    row.appendChild(kind);
    var set = function (k) { return function (v) { n[k] = v; changed(); }; };
    if (n.type === "attr") {
      row.appendChild(input("Attribute name", n.attr, set("attr"), { placeholder: "plan" }));
      row.appendChild(select("Operator", n.op, ATTR_OPS.map(function (o) { return [o[0], o[1]]; }), function (v) { n.op = v; render(); changed(); }));
      var spec = ATTR_OPS.filter(function (o) { return o[0] === n.op; })[0];
      if (spec[2] !== "none") row.appendChild(input("Value", n.value, set("value"), { placeholder: spec[2] === "range" ? "1, 10" : "value" }));
    } else if (n.type === "event") {
      row.appendChild(input("Event name", n.event, set("event"), { placeholder: "purchase" }));
      row.appendChild(select("Performed or not", n.op, [["performed", "performed"], ["notPerformed", "never performed"]], function (v) { n.op = v; render(); changed(); }));
      if (n.op === "performed") {
        row.appendChild(select("Count operator", n.countOp, COUNT_OPS.map(function (o) { return [o, { gte: "at least", gt: "more than", eq: "exactly", lte: "at most", lt: "fewer than" }[o]]; }), set("countOp")));
        row.appendChild(input("Times", n.count, set("count"), { placeholder: "1", size: "4", inputmode: "numeric" }));
      }
      row.appendChild(input("Within", n.within, set("within"), { placeholder: "in the last… e.g. 30d", size: "10" }));
    } else if (n.type === "audience") {
      row.appendChild(select("In or not in", n.op, [["in", "is in"], ["notIn", "is not in"]], set("op")));
      row.appendChild(input("Audience", n.audience, set("audience"), { list: "audience-names", placeholder: "audience name" }));
    } else {
      row.appendChild(select("Channel", n.channel, data.channels.map(function (c) { return [c, c]; }), set("channel")));
    }
    row.appendChild(el("button", { type: "button", "class": "link", "aria-label": "Remove condition " + (index + 1), text: "Remove", onclick: function () { parent.children.splice(index, 1); render(); changed(); } }));
    return row;
  }

  function blank(type) {
    if (type === "event") return { type: "event", event: "", op: "performed", countOp: "gte", count: "", within: "" };
    if (type === "audience") return { type: "audience", audience: "", op: "in" };
    if (type === "channel") return { type: "channel", channel: data.channels[0] };
    if (type === "group") return group("any");
    return { type: "attr", attr: "", op: "is", value: "" };
  }

  function renderGroup(g, parent, index, depth) {
    var box = el("div", { "class": "group depth-" + depth, role: "group", "aria-label": depth ? "Group" : "All conditions" });
    var head = el("div", { "class": "group-head" });
    head.appendChild(select("Match", g.mode, [["all", "Match all of"], ["any", "Match any of"]], function (v) { g.mode = v; changed(); }));
    var neg = el("label", {}, [el("input", { type: "checkbox", onchange: function (e) { g.negate = e.target.checked; changed(); } }), document.createTextNode(" not")]);
    neg.firstChild.checked = g.negate;
    head.appendChild(neg);
    if (parent) head.appendChild(el("button", { type: "button", "class": "link", text: "Remove group", onclick: function () { parent.children.splice(index, 1); render(); changed(); } }));
    box.appendChild(head);
    g.children.forEach(function (c, i) {
      box.appendChild(c.type === "group" ? renderGroup(c, g, i, depth + 1) : renderLeaf(c, g, i));
    });
    var add = el("div", { "class": "add" });
    add.appendChild(el("button", { type: "button", text: "+ Condition", onclick: function () { g.children.push(blank("attr")); render(); changed(); focusLast(); } }));
    if (depth < 3) add.appendChild(el("button", { type: "button", text: "+ Group", onclick: function () { g.children.push(blank("group")); render(); changed(); } }));
    box.appendChild(add);
    return box;
  }

  var root = fromTree(data.tree);
  if (root === null) {  // a tree the builder cannot draw: edit it as text
    root = group("all");
    form.querySelector("input[name=mode][value=text]").checked = true;
    builderEl.hidden = true;
    document.getElementById("text-mode").hidden = false;
  } else if (root.type !== "group") { var r = group("all"); r.children.push(root); root = r; }

  function render() {
    builderEl.innerHTML = "";
    builderEl.appendChild(renderGroup(root, null, 0, 0));
    var dl = el("datalist", { id: "audience-names" });
    data.audiences.forEach(function (a) { dl.appendChild(el("option", { value: a })); });
    builderEl.appendChild(dl);
  }
  function focusLast() {
    var inputs = builderEl.querySelectorAll("input[aria-label='Attribute name']");
    if (inputs.length) inputs[inputs.length - 1].focus();
  }

  function mode() { return form.querySelector("input[name=mode]:checked").value; }
  var timer = null;
  function changed() {
    jsonField.value = JSON.stringify(toTree(root));
    clearTimeout(timer);
    timer = setTimeout(preview, 250);
  }
  function preview() {
    var mine = ++seq;
    var body = mode() === "text" ? { mode: "text", text: textField.value } : { filter: toTree(root) };
    fetch(form.dataset.preview, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": token },
      body: JSON.stringify(body)
    }).then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); }).then(function (res) {
      if (mine !== seq) return;  // an older answer arriving late
      var ok = res[0], j = res[1];
      if (ok) {
        errorEl.textContent = "";
        document.getElementById("count").textContent = j.count;
        document.getElementById("count-label").textContent = j.count === 1 ? "user matches now" : "users match now";
        document.getElementById("string-form").textContent = j.stringForm === null || j.stringForm === undefined ? "— (no string form)" : j.stringForm;
        document.getElementById("sample").textContent = j.sample.join(", ") || "—";
      } else {
        document.getElementById("count").textContent = "?";
        var parts = Object.keys(j.errors || {}).map(function (k) { return k + ": " + [].concat(j.errors[k]).join("; "); });
        errorEl.textContent = (j.message || "Invalid filter") + (parts.length ? " — " + parts.join(" · ") : "");
      }
    }).catch(function () { if (mine === seq) errorEl.textContent = "Could not reach the server for the count"; });
  }

  form.querySelectorAll("input[name=mode]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      var text = mode() === "text";
      builderEl.hidden = text;
      document.getElementById("text-mode").hidden = !text;
      changed();
    });
  });
  textField.addEventListener("input", changed);
  render();
  changed();
})();
