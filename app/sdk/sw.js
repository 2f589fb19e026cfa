/*! Cairn service worker. A site's own /sw.js imports it:
 *
 *   importScripts("https://CAIRN/sdk/sw.js");
 *
 * cairn.js registers that file as /sw.js?key=pk_...&api=https://CAIRN, where this reads both.
 * Shows each push (`tag` is the collapse key: two subscriptions in one browser show one
 * notification), opens its url (already Cairn's signed click-tracking link) on a click, reports
 * the delivery, and re-subscribes when the browser replaces the subscription.
 */
(function (self) {
  "use strict";

  var params = new URL(self.location.href).searchParams;
  var KEY = params.get("key") || "";
  var API = (params.get("api") || self.location.origin).replace(/\/+$/, "");
  // Written by cairn.js on this origin: who the visitor is and which topics they chose.
  var MEMORY = new URL("/__cairn/identity", self.location.origin).href;

  function post(method, path, body) {
    return fetch(API + path, {
      method: method,
      headers: {Authorization: "Bearer " + KEY, "Content-Type": "application/json"},
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
    }).then(function (response) {
      if (!response.ok) throw new Error("cairn: " + method + " " + path + " answered " + response.status);
      return response.status === 204 ? null : response.json();
    });
  }

  function parse(data) {
    if (!data) return {};
    try {
      return data.json();
    } catch (e) {
      return {body: data.text()};
    }
  }

  /** The notification options for a push payload. */
  function notificationOf(payload) {
    var actions = Array.isArray(payload.actions) ? payload.actions : [];
    var actionUrls = {};
    actions.forEach(function (a) { if (a && a.action && a.url) actionUrls[a.action] = a.url; });
    var options = {
      body: payload.body || "",
      data: {url: payload.url || null, messageId: payload.messageId || null, actions: actionUrls, data: payload.data || null},
    };
    if (payload.icon) options.icon = payload.icon;
    if (payload.image) options.image = payload.image;
    if (payload.badge) options.badge = payload.badge;
    // A second copy (another subscription of this browser) replaces the first, silently.
    if (payload.tag) options.tag = String(payload.tag);
    if (actions.length) {
      options.actions = actions.filter(function (a) { return a && a.action && a.title; }).map(function (a) {
        return a.icon ? {action: a.action, title: a.title, icon: a.icon} : {action: a.action, title: a.title};
      });
    }
    return options;
  }

  /** Tell Cairn the notification was shown. A text/plain POST with the key in the body
   * needs no CORS preflight; its answer is not read (`no-cors`). Best effort: a lost report
   * never costs the notification. */
  function delivered(messageId) {
    if (typeof messageId !== "number" || !KEY) return Promise.resolve();
    return fetch(API + "/sdk/events", {
      method: "POST",
      mode: "no-cors",
      credentials: "omit",
      headers: {"Content-Type": "text/plain"},
      body: JSON.stringify({key: KEY, kind: "delivered", messageId: messageId}),
    }).catch(function () {});
  }

  function showPush(data) {
    var payload = parse(data);
    var options = notificationOf(payload);
    return self.registration.showNotification(payload.title || "", options).then(function () {
      return delivered(payload.messageId);
    });
  }

  /** Where a click goes: the action's own link, else the notification's (both tracked). */
  function clickTarget(notification, action) {
    var data = notification.data || {};
    return (action && data.actions && data.actions[action]) || data.url || null;
  }

  function remembered() {
    return caches.open("cairn").then(function (cache) {
      return cache.match(MEMORY);
    }).then(function (response) {
      return response ? response.json() : {};
    }).catch(function () { return {}; });
  }

  function base64UrlBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function bytesBase64Url(buffer) {
    var text = "";
    new Uint8Array(buffer).forEach(function (b) { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  /**
   * The browser dropped or replaced the subscription: subscribe again with the same key and
   * post the new one for the same visitor (cairn.js left who it is in Cache Storage). The old
   * endpoint needs no call: the push service answers 404/410 for it, which deactivates it.
   */
  async function resubscribe(oldSubscription, newSubscription) {
    var subscription = newSubscription;
    var key = oldSubscription && oldSubscription.options && oldSubscription.options.applicationServerKey;
    if (!subscription) {
      if (!key) key = base64UrlBytes((await post("GET", "/v1/push/vapid-key")).publicKey);
      subscription = await self.registration.pushManager.subscribe({userVisibleOnly: true, applicationServerKey: key});
    }
    key = (subscription.options && subscription.options.applicationServerKey) || key;
    var who = await remembered();
    var body = {
      subscription: subscription.toJSON(),
      topics: Array.isArray(who.topics) ? who.topics : [],
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
      language: self.navigator.language,
    };
    if (key) body.applicationServerKey = bytesBase64Url(key);
    ["userId", "userHash", "anonymousId"].forEach(function (k) { if (who[k]) body[k] = who[k]; });
    return post("POST", "/v1/push/subscriptions", body);
  }

  self.addEventListener("push", function (event) {
    event.waitUntil(showPush(event.data));
  });

  self.addEventListener("notificationclick", function (event) {
    event.notification.close();
    var url = clickTarget(event.notification, event.action);
    if (url) event.waitUntil(self.clients.openWindow(url));
  });

  self.addEventListener("pushsubscriptionchange", function (event) {
    event.waitUntil(resubscribe(event.oldSubscription, event.newSubscription));
  });

  // Take over at once: a visitor who just allowed notifications should get the next push.
  self.addEventListener("install", function () { self.skipWaiting(); });
  self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });

  self.cairnWorker = {key: KEY, api: API, notificationOf: notificationOf, resubscribe: resubscribe};
})(self);
