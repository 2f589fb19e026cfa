/*! Cairn site SDK: web push with a topics prompt, identify and track. Plain ES2017, no build.
 *
 *   <script src="https://CAIRN/sdk/cairn.js"></script>
 *   <script>cairn.init({key: "pk_...", topics: [{key: "news", name: "News"}]});</script>
 *
 * The site serves a one-line `/sw.js`: importScripts("https://CAIRN/sdk/sw.js");
 * Permission is only ever asked from a user gesture: `cairn.subscribe()` from a click handler,
 * or `cairn.showPrompt()`, whose Allow button is that click.
 */
(function (window) {
  "use strict";

  var VERSION = "1";
  var PREFIX = "cairn:";
  // Where the page leaves the visitor's identity for the service worker (same origin; a
  // worker has no localStorage): it re-subscribes on `pushsubscriptionchange` with it.
  var WORKER_MEMORY = "/__cairn/identity";
  var GESTURES = ["click", "keydown", "keyup", "mouseup", "pointerup", "touchend", "submit"];

  var script = document.currentScript;
  var scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  var queued = Array.isArray(window.cairn) ? window.cairn : [];
  var config = null;
  var memory = {};

  function load(name) {
    try {
      return window.localStorage.getItem(PREFIX + name);
    } catch (e) {
      return Object.prototype.hasOwnProperty.call(memory, name) ? memory[name] : null;
    }
  }

  function save(name, value) {
    try {
      if (value === null || value === undefined) window.localStorage.removeItem(PREFIX + name);
      else window.localStorage.setItem(PREFIX + name, value);
    } catch (e) {
      if (value === null || value === undefined) delete memory[name];
      else memory[name] = value;
    }
  }

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  }

  function fail(name, message) {
    return new DOMException("cairn: " + message, name);
  }

  function compact(object) {
    var out = {};
    Object.keys(object).forEach(function (k) {
      if (object[k] !== undefined && object[k] !== null && object[k] !== "") out[k] = object[k];
    });
    return out;
  }

  function configured() {
    if (!config) throw fail("InvalidStateError", "call cairn.init({key: 'pk_...'}) first");
    return config;
  }

  function anonymousId() {
    var id = load("anonymousId");
    if (!id) {
      id = uuid();
      save("anonymousId", id);
    }
    return id;
  }

  /** Who the calls speak for: the identified user (with its hash) and the visitor id. */
  function identity() {
    return compact({userId: load("userId"), userHash: load("userHash"), anonymousId: anonymousId()});
  }

  async function api(method, path, body) {
    var cfg = configured();
    var text = body === undefined ? undefined : JSON.stringify(body);
    var response = await fetch(cfg.apiHost + path, {
      method: method,
      headers: {Authorization: "Bearer " + cfg.key, "Content-Type": "application/json"},
      body: text,
      credentials: "omit",
      // A track() right before a navigation still arrives (keepalive bodies stop at 64 KB).
      keepalive: text !== undefined && text.length < 60000,
    });
    var raw = await response.text();
    var data = null;
    try {
      data = raw ? JSON.parse(raw) : null;
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      var error = new Error("cairn: " + method + " " + path + " answered " + response.status +
        (data && data.message ? ": " + data.message : ""));
      error.status = response.status;
      error.body = data;
      throw error;
    }
    return data;
  }

  function init(options) {
    options = options || {};
    var key = options.key;
    if (typeof key !== "string" || key.indexOf("pk_") !== 0) {
      // A secret key in a page is public the moment the page is served.
      throw fail("SyntaxError", "init needs the project's publishable key (pk_...), never a secret key");
    }
    config = {
      key: key,
      apiHost: String(options.apiHost || scriptOrigin).replace(/\/+$/, ""),
      serviceWorker: options.serviceWorker || "/sw.js",
      scope: options.scope,
      topics: Array.isArray(options.topics) ? options.topics : [],
    };
    anonymousId();
    return cairn;
  }

  function identify(userId, options) {
    configured();
    options = options || {};
    if (typeof userId !== "string" || !userId) {
      return Promise.reject(new TypeError("cairn.identify: userId must be a non-empty string"));
    }
    if (userId !== load("userId")) save("userHash", null);
    save("userId", userId);
    if (options.userHash) save("userHash", options.userHash);
    rememberForWorker();
    return api("POST", "/v1/identify", Object.assign(identity(), {
      traits: options.traits || {},
      messageId: uuid(),
      timestamp: new Date().toISOString(),
    }));
  }

  function track(name, properties) {
    configured();
    if (typeof name !== "string" || !name) {
      return Promise.reject(new TypeError("cairn.track: the event name must be a non-empty string"));
    }
    return api("POST", "/v1/track", Object.assign(identity(), {
      event: name,
      properties: properties || {},
      messageId: uuid(),
      timestamp: new Date().toISOString(),
    }));
  }

  /** Logging out: forget the user; the browser becomes a new anonymous visitor. */
  function reset() {
    ["userId", "userHash", "anonymousId"].forEach(function (name) { save(name, null); });
    rememberForWorker();
  }

  function pushSupported() {
    return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  }

  /** True while the page handles a user gesture (a click, a key press). */
  function inGesture() {
    if (navigator.userActivation) return navigator.userActivation.isActive;
    var event = window.event;
    return !!(event && event.isTrusted && GESTURES.indexOf(event.type) >= 0);
  }

  function base64UrlBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var raw = window.atob(b64 + "===".slice((b64.length + 3) % 4));
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function sameBytes(a, b) {
    if (!a || !b) return true; // the browser does not tell: assume it is the same key
    a = new Uint8Array(a);
    b = new Uint8Array(b);
    if (a.length !== b.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  function workerUrl() {
    var cfg = configured();
    var url = new URL(cfg.serviceWorker, location.href);
    // The worker reads its key and API origin from its own URL.
    url.searchParams.set("key", cfg.key);
    url.searchParams.set("api", cfg.apiHost);
    return url.href;
  }

  function activated(registration) {
    return new Promise(function (resolve, reject) {
      if (registration.active) return resolve(registration);
      var worker = registration.installing || registration.waiting;
      if (!worker) return reject(fail("AbortError", "the service worker did not install"));
      worker.addEventListener("statechange", function () {
        if (worker.state === "activated") resolve(registration);
        else if (worker.state === "redundant") reject(fail("AbortError", "the service worker did not install"));
      });
      if (registration.active) resolve(registration);
    });
  }

  async function registration() {
    var cfg = configured();
    var registered = await navigator.serviceWorker.register(workerUrl(), cfg.scope ? {scope: cfg.scope} : undefined);
    return activated(registered);
  }

  async function vapidKey() {
    var answer = await api("GET", "/v1/push/vapid-key");
    return {text: answer.publicKey, bytes: base64UrlBytes(answer.publicKey)};
  }

  function deviceFields() {
    return compact({
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
      language: navigator.language,
    });
  }

  /** Identity and topics, where the service worker finds them (Cache Storage, same origin). */
  function rememberForWorker() {
    if (!window.caches) return Promise.resolve();
    var remembered = Object.assign(identity(), {topics: JSON.parse(load("topics") || "[]")});
    return window.caches.open("cairn").then(function (cache) {
      return cache.put(new URL(WORKER_MEMORY, location.origin).href, new Response(JSON.stringify(remembered), {
        headers: {"Content-Type": "application/json"},
      }));
    }).catch(function () { /* no Cache Storage: the worker cannot re-subscribe by itself */ });
  }

  function defaultTopics() {
    return configured().topics.filter(function (t) { return t.default !== false; }).map(function (t) { return t.key; });
  }

  /** Subscribe this browser; it asks for permission, so only from a user gesture. */
  async function subscribe(options) {
    configured();
    options = options || {};
    if (!pushSupported()) throw fail("NotSupportedError", "this browser has no web push");
    if (Notification.permission === "denied") throw fail("NotAllowedError", "notifications are blocked for this site");
    if (Notification.permission !== "granted") {
      // Browsers quieten or block sites that ask unprompted: ask only for a click or a key.
      if (!inGesture()) {
        throw fail("NotAllowedError", "subscribe() asks for permission: call it from a user gesture (a click), or use showPrompt()");
      }
      var permission = await Notification.requestPermission();
      if (permission !== "granted") throw fail("NotAllowedError", "notification permission " + permission);
    }
    var topics = Array.isArray(options.topics) ? options.topics : defaultTopics();
    var registered = await registration();
    var key = await vapidKey();
    var subscription = await registered.pushManager.getSubscription();
    if (subscription && !sameBytes(subscription.options && subscription.options.applicationServerKey, key.bytes)) {
      // Made with another (rotated) key: it would fail forever.
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registered.pushManager.subscribe({userVisibleOnly: true, applicationServerKey: key.bytes});
    }
    await api("POST", "/v1/push/subscriptions", Object.assign(identity(), deviceFields(), {
      subscription: subscription.toJSON(),
      topics: topics,
      // The key it was made with: a rotation in between cannot leave a mismatched device.
      applicationServerKey: key.text,
    }));
    save("topics", JSON.stringify(topics));
    save("endpoint", subscription.endpoint);
    await rememberForWorker();
    return subscription;
  }

  /** Remove this browser's subscription, here and at Cairn. True if there was one. */
  async function unsubscribe() {
    configured();
    if (!pushSupported()) return false;
    var registered = await navigator.serviceWorker.getRegistration(new URL(".", workerUrl()).href);
    var subscription = registered && (await registered.pushManager.getSubscription());
    if (!subscription) return false;
    await api("DELETE", "/v1/push/subscriptions", {subscription: {endpoint: subscription.endpoint}});
    await subscription.unsubscribe();
    save("endpoint", null);
    return true;
  }

  var STYLE = [
    ":host{all:initial}",
    ".box{position:fixed;z-index:2147483647;bottom:16px;right:16px;max-width:320px;padding:16px;",
    "background:#fff;color:#222;border-radius:8px;box-shadow:0 4px 24px rgba(0,0,0,.2);",
    "font:14px/1.4 system-ui,sans-serif}",
    "h2{font-size:16px;margin:0 0 6px}p{margin:0 0 10px}label{display:block;margin:4px 0}",
    ".buttons{display:flex;gap:8px;justify-content:flex-end;margin-top:12px}",
    "button{font:inherit;padding:6px 12px;border-radius:6px;border:1px solid #888;background:#fff;cursor:pointer}",
    "button.allow{background:#1a5fd0;border-color:#1a5fd0;color:#fff}",
  ].join("");

  function element(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (k) { node.setAttribute(k, attributes[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /**
   * A small dialog with topic checkboxes and Allow / Not now; Allow (a click) subscribes.
   * Resolves with the subscription, or null when not shown or dismissed.
   */
  function showPrompt(options) {
    configured();
    options = options || {};
    if (!pushSupported() || Notification.permission === "denied") return Promise.resolve(null);
    var topics = Array.isArray(options.topics) ? options.topics : configured().topics;
    return new Promise(function (resolve, reject) {
      var host = element("div", {"data-cairn-prompt": ""});
      var root = host.attachShadow({mode: "open"});
      var box = element("div", {class: "box", role: "dialog", "aria-labelledby": "cairn-title"});
      root.appendChild(element("style", {}, STYLE));
      root.appendChild(box);
      box.appendChild(element("h2", {id: "cairn-title"}, options.title || "Get notifications?"));
      box.appendChild(element("p", {}, options.text || "We will only send what you choose."));
      var boxes = topics.map(function (topic) {
        var label = element("label");
        var input = element("input", {type: "checkbox", value: topic.key, name: "topic"});
        input.checked = topic.default !== false;
        label.appendChild(input);
        label.appendChild(document.createTextNode(" " + (topic.name || topic.key)));
        box.appendChild(label);
        return input;
      });
      var buttons = element("div", {class: "buttons"});
      var later = element("button", {type: "button", class: "later"}, options.later || "Not now");
      var allow = element("button", {type: "button", class: "allow"}, options.allow || "Allow");
      buttons.appendChild(later);
      buttons.appendChild(allow);
      box.appendChild(buttons);
      later.addEventListener("click", function () {
        host.remove();
        resolve(null);
      });
      allow.addEventListener("click", function () {
        var chosen = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
        host.remove();
        // Called synchronously inside the click: this is the gesture the permission needs.
        subscribe({topics: chosen}).then(resolve, reject);
      });
      document.body.appendChild(host);
    });
  }

  var cairn = {
    version: VERSION,
    init: init,
    identify: identify,
    track: track,
    reset: reset,
    subscribe: subscribe,
    unsubscribe: unsubscribe,
    showPrompt: showPrompt,
    anonymousId: function () { return anonymousId(); },
    /** A call queued before the script loaded: cairn.push(["init", {...}]). */
    push: function (call) {
      return cairn[call[0]].apply(cairn, call.slice(1));
    },
  };
  window.cairn = cairn;
  queued.forEach(function (call) { cairn.push(call); });
})(window);
