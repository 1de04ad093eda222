// The eslab console's own script: the live feed (Server-Sent Events from
// GET /events/stream) and the projection actions. Every element is built
// with textContent, never from HTML, so event data can never run as code.
"use strict";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function base() {
  return document.body.dataset.base || "/console";
}

function liveEvent(event) {
  const item = el("li", "event");
  item.dataset.type = event.event_type;
  item.dataset.stream = event.stream_id;
  const header = el("header");
  const stream = el("a", "stream", event.stream_id);
  stream.href = base() + "/streams/" + encodeURIComponent(event.stream_id);
  header.append(stream, " ", el("span", "version", "v" + event.stream_version), " ",
    el("strong", "type", event.event_type), " ", el("span", "position", "#" + event.position), " ",
    el("time", "", event.recorded_at));
  const correlation = event.metadata && event.metadata.correlation_id;
  if (correlation) {
    const link = el("a", "correlation", "request " + correlation);
    link.href = base() + "/requests/" + encodeURIComponent(correlation);
    header.append(" ", link);
  }
  const details = el("details");
  details.append(el("summary", "", "payload"), el("pre", "payload", JSON.stringify(event.payload, null, 2)));
  item.append(header, details);
  return item;
}

function followLive(feed) {
  const form = document.getElementById("live-filter");
  const status = document.getElementById("live-status");
  const params = new URLSearchParams(window.location.search);
  form.category.value = params.get("category") || "";
  form.type.value = params.get("type") || "";
  const query = new URLSearchParams();
  if (form.category.value) query.set("category", form.category.value);
  if (form.type.value) query.set("type", form.type.value);
  // From the feed's head when the page was made: what happens from now on.
  // A reconnecting EventSource resumes by itself (Last-Event-ID).
  if (feed.dataset.after) query.set("after", feed.dataset.after);
  const source = new EventSource(feed.dataset.stream + "?" + query.toString());
  source.onopen = () => { status.textContent = "live"; feed.dataset.live = "true"; };
  source.onerror = () => { status.textContent = "reconnecting…"; };
  source.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    feed.prepend(liveEvent(event));
    while (feed.children.length > 500) feed.lastChild.remove();
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    if (form.category.value) next.set("category", form.category.value);
    if (form.type.value) next.set("type", form.type.value);
    window.location.search = next.toString();
  });
  window.addEventListener("beforeunload", () => source.close());
}

function token() {
  const input = document.getElementById("token");
  return input ? input.value : "";
}

function act(button) {
  const status = document.getElementById("action-status");
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  button.disabled = true;
  fetch(button.dataset.action, { method: "POST", headers, body: JSON.stringify({ stream: button.dataset.stream }) })
    .then((response) => response.json().then((body) => ({ response, body })))
    .then(({ response, body }) => {
      if (response.ok) {
        status.textContent = "done: " + body.events + " event(s) of " + body.stream;
        status.className = "ok";
        setTimeout(() => window.location.reload(), 300);
      } else {
        // The console's own answers say `error`; a service's problem+json says `detail`.
        status.textContent = "failed (" + response.status + "): " + ((body && (body.error || body.detail)) || response.statusText);
        status.className = "error";
        button.disabled = false;
      }
    })
    .catch((e) => { status.textContent = "failed: " + e; status.className = "error"; button.disabled = false; });
}

document.addEventListener("DOMContentLoaded", () => {
  const feed = document.getElementById("live-feed");
  if (feed) followLive(feed);
  for (const button of document.querySelectorAll("button.action")) {
    button.addEventListener("click", () => act(button));
  }
});
