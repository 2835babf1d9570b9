// The event browser: plain JavaScript over the cart API (same origin) and the billing API
// (the URL /ui/config.json gives; billing allows this page's origin). No build, no CDN.
// When reads are locked (MSC_READ_TOKEN), the first 401 asks for the token once; it is kept
// in this tab's sessionStorage and sent as a header on every call, the live feed included
// (read with fetch, as EventSource cannot send headers: the token never goes into a URL).
"use strict";

const FEED_ROWS = 200;
const HEALTH_EVERY_MS = 2000;
const LINEAGE_EVERY_MS = 1000;
const LINEAGE_GIVE_UP_MS = 120000;
const FEED_RETRY_MS = 1000;
const READ_TOKEN_KEY = "msc-read-token";

const state = {
  billingUrl: null,
  cart: null, // {id, events: [...], version}
  lineage: null, // {eventId, timer, started}
  deadLetterCount: null,
};

const $ = (id) => document.getElementById(id);

// --- talking to the services --------------------------------------------------------------

class ServiceDown extends Error {
  constructor(service, message) { super(message); this.service = service; }
}

// --- the read token -----------------------------------------------------------------------

let tokenAsked = null; // the pending question, shared by every call that met a 401

function readHeaders() {
  const token = sessionStorage.getItem(READ_TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// Resolves once the user entered a token; every caller refused meanwhile waits on one form.
function askToken(refused) {
  if (!tokenAsked) {
    tokenAsked = new Promise((resolve) => {
      const form = $("token-form");
      $("token-message").textContent = refused ? "That token was refused; try again." : "";
      form.hidden = false;
      $("read-token").focus();
      form.onsubmit = (submit) => {
        submit.preventDefault();
        sessionStorage.setItem(READ_TOKEN_KEY, $("read-token").value.trim());
        $("read-token").value = "";
        form.hidden = true;
        tokenAsked = null;
        resolve();
      };
    });
  }
  return tokenAsked;
}

// fetch with the read token; a read's 401 asks for it (again) and retries. A command's 401 is
// the caller's to explain (a replay needs the API token).
async function authorizedFetch(url, options = {}) {
  const isRead = (options.method || "GET") === "GET";
  for (;;) {
    const headers = { ...readHeaders(), ...(options.headers || {}) };
    const response = await fetch(url, { cache: "no-store", ...options, headers });
    if (response.status !== 401 || !isRead) return response;
    await askToken(Boolean(sessionStorage.getItem(READ_TOKEN_KEY)));
  }
}

async function call(service, path, options = {}) {
  const base = service === "billing" ? state.billingUrl : "";
  const url = base + path;
  let response;
  try {
    response = await authorizedFetch(url, options);
  } catch (err) {
    const where = service === "billing" ? `billing service at ${state.billingUrl}` : "cart service";
    throw new ServiceDown(service, `The ${where} is not answering. Is it running? (msc up starts both.)`);
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  return { ok: response.ok, status: response.status, body };
}

function detail(result) {
  return (result.body && result.body.detail) || `HTTP ${result.status}`;
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text || "";
  banner.hidden = !text;
}

const downServices = new Set();
function serviceState(service, err) {
  if (err) downServices.add(service); else downServices.delete(service);
  const messages = [...downServices].map((name) => name === "billing"
    ? `The billing service at ${state.billingUrl} is not answering (or does not allow this page's origin: start it with MSC_CART_URL=${location.origin}): bills, lineage past the broker, dead letters and lag are unavailable.`
    : "The cart service is not answering: the feed, carts and outbox are unavailable.");
  showBanner(messages.join(" "));
}

// --- small helpers ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function when(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  return moment.toLocaleTimeString([], { hour12: false }) + "." +
    String(moment.getMilliseconds()).padStart(3, "0");
}

function money(cents) { return (cents / 100).toFixed(2); }

function setMessage(id, text, kind = "") {
  const node = $(id);
  node.textContent = text || "";
  node.className = "message " + kind;
}

function setHealth(id, text, kind) {
  const node = document.querySelector(`[data-testid="${id}"]`);
  node.textContent = text;
  node.className = kind || "";
}

// --- live feed ----------------------------------------------------------------------------

// Server-sent events read with fetch (so the token goes in a header), resuming after the last
// position seen, as EventSource would with Last-Event-ID.
async function startFeed() {
  let after = null;
  for (;;) {
    try {
      const query = after === null ? "recent=30" : `after=${after}`;
      const response = await authorizedFetch(`/events/stream?${query}`);
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setHealth("health-feed", "live feed: connected", "ok");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const seen = feedFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (seen !== null) after = seen;
        }
      }
    } catch (err) {
      // the stream broke or the service is down: reconnect below
    }
    setHealth("health-feed", "live feed: reconnecting…", "bad");
    await new Promise((resolve) => setTimeout(resolve, FEED_RETRY_MS));
  }
}

// Shows one SSE frame's event; returns its position (`id:`), or null for comments and retry.
function feedFrame(frame) {
  let id = null;
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("id:")) id = Number(line.slice(3).trim());
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (data.length) addFeedRow(JSON.parse(data.join("\n")));
  return id;
}

// The payload without what the row shows already (cart) or hides in its tooltip (timestamp).
function payloadText(data) {
  if (data === null || typeof data !== "object") return JSON.stringify(data);
  const { cart_id: _cart, timestamp: _moment, ...rest } = data;
  return Object.keys(rest).length ? JSON.stringify(rest) : "{}";
}

function addFeedRow(event) {
  $("feed-empty").hidden = true;
  const row = el("tr", { class: "fresh", tabindex: "0", "data-event-id": event.event_id },
    el("td", { text: String(event.position) }),
    el("td", { text: event.aggregate_id }),
    el("td", { text: event.event_type }),
    el("td", { text: String(event.version) }),
    el("td", { class: "payload", title: JSON.stringify(event.data), text: payloadText(event.data) }));
  const open = () => {
    openCart(event.aggregate_id, event.version);
    showLineage(event.event_id);
  };
  row.addEventListener("click", open);
  row.addEventListener("keydown", (key) => { if (key.key === "Enter") open(); });
  const rows = $("feed-rows");
  rows.prepend(row);
  while (rows.children.length > FEED_ROWS) rows.lastChild.remove();
  const cart = state.cart;
  if (cart && cart.id === event.aggregate_id && !cart.events.some((e) => e.event_id === event.event_id)) {
    const atLatest = cart.version === cart.events[cart.events.length - 1].version;
    openCart(cart.id, atLatest ? event.version : cart.version); // keep a travelled-to version
  }
}

// --- cart and time travel -----------------------------------------------------------------

async function openCart(cartId, version = null) {
  $("cart-id").value = cartId;
  let result;
  try {
    result = await call("cart", `/carts/${encodeURIComponent(cartId)}/events`);
    serviceState("cart", null);
  } catch (err) {
    serviceState("cart", err);
    setMessage("cart-message", err.message, "bad");
    return;
  }
  const events = result.ok ? result.body.events : [];
  if (events.length === 0) {
    state.cart = null;
    $("cart-view").hidden = true;
    const texts = {
      422: `"${cartId}" is not a cart id: ${detail(result)}`,
      404: `There is no cart "${cartId}" yet. Adding an item creates it.`,
    };
    setMessage("cart-message", texts[result.status] || `Could not read cart ${cartId}: ${detail(result)}`, "bad");
    clearBilling(`No cart "${cartId}", so no bill.`);
    return;
  }
  setMessage("cart-message", "");
  const latest = events[events.length - 1].version;
  state.cart = { id: cartId, events, version: Math.min(version || latest, latest) };
  location.hash = `cart=${encodeURIComponent(cartId)}`;
  $("cart-view").hidden = false;
  const slider = $("version-slider");
  slider.max = String(latest);
  await showVersion(state.cart.version);
  refreshBilling();
}

async function cartAt(cartId, version) {
  if (version < 1) return { items: {}, status: "open", version: 0 };
  const result = await call("cart", `/carts/${encodeURIComponent(cartId)}?version=${version}`);
  if (!result.ok) throw new Error(detail(result));
  return result.body;
}

async function showVersion(version) {
  const cart = state.cart;
  if (!cart) return;
  const latest = cart.events[cart.events.length - 1].version;
  cart.version = version;
  $("version-slider").value = String(version);
  $("version-prev").disabled = version <= 1;
  $("version-next").disabled = version >= latest;
  $("version-label").textContent = `version ${version} of ${latest}`;
  let now, before;
  try {
    [now, before] = await Promise.all([cartAt(cart.id, version), cartAt(cart.id, version - 1)]);
  } catch (err) {
    setMessage("cart-message", `Could not load version ${version}: ${err.message}`, "bad");
    return;
  }
  if (state.cart !== cart || cart.version !== version) return; // the user moved on meanwhile
  const items = $("cart-items");
  items.replaceChildren(...Object.entries(now.items).map(([item, quantity]) =>
    el("tr", {}, el("td", { text: item }), el("td", { text: String(quantity) }))));
  if (Object.keys(now.items).length === 0) {
    items.append(el("tr", {}, el("td", { colspan: "2", class: "hint", text: "(empty)" })));
  }
  $("cart-status").textContent = `status: ${now.status.replace("_", " ")}`;
  $("cart-diff").replaceChildren(...describeChange(before, now));
  const event = cart.events.find((e) => e.version === version);
  $("cart-event").textContent = JSON.stringify(event, null, 2);
  $("show-lineage").onclick = () => showLineage(event.event_id);
}

function describeChange(before, now) {
  const lines = [];
  const names = new Set([...Object.keys(before.items), ...Object.keys(now.items)]);
  for (const item of [...names].sort()) {
    const was = before.items[item] || 0;
    const is = now.items[item] || 0;
    if (is > was) lines.push(el("li", { class: "added", text: `+${is - was} ${item} (${was} → ${is})` }));
    if (is < was) lines.push(el("li", { class: "removed", text: `−${was - is} ${item} (${was} → ${is})` }));
  }
  if (before.status !== now.status) {
    lines.push(el("li", { text: `status ${before.status.replace("_", " ")} → ${now.status.replace("_", " ")}` }));
  }
  if (lines.length === 0) lines.push(el("li", { class: "hint", text: "nothing (first version)" }));
  return lines;
}

// --- lineage ------------------------------------------------------------------------------

function showLineage(eventId) {
  if (state.lineage) clearTimeout(state.lineage.timer);
  state.lineage = { eventId, timer: null, started: Date.now() };
  $("lineage").replaceChildren();
  setMessage("lineage-message", `Following event ${eventId}…`, "waiting");
  refreshLineage(state.lineage);
}

function step(what, detailText, kind) {
  return el("li", { class: kind, "data-step": what },
    el("div", { class: "what", text: what }), el("div", { class: "detail", text: detailText }));
}

async function refreshLineage(current) {
  const id = encodeURIComponent(current.eventId);
  const steps = [];
  let complete = false;
  try {
    const found = await call("cart", `/lineage/${id}`);
    serviceState("cart", null);
    if (!found.ok) {
      setMessage("lineage-message", found.status === 404
        ? `No stored event ${current.eventId}: nothing to follow.` : detail(found), "bad");
      return;
    }
    const e = found.body.event;
    const o = found.body.outbox;
    steps.push(step("command", `correlation id ${e.correlation_id || "(none)"}` +
      (e.causation_id && e.causation_id !== e.correlation_id ? `, caused by ${e.causation_id}` : "") +
      (e.trace_id ? `, trace id ${e.trace_id}` : ""), "done"));
    steps.push(step("stored event", `#${e.position} ${e.event_type} v${e.version} of cart ${e.aggregate_id} at ${when(e.timestamp)}`, "done"));
    const published = o && o.published_at;
    if (!o) {
      steps.push(step("outbox row", "none: this store keeps no outbox row for the event", "waiting"));
    } else {
      steps.push(step("outbox row", `written ${when(o.created_at)}, ` +
        (published ? `marked published ${when(o.published_at)}` : "waiting to be published") +
        `, ${o.attempts} attempt(s)` + (o.last_error ? `, last error: ${o.last_error}` : ""),
        published ? "done" : (o.last_error ? "failed" : "waiting")));
      steps.push(step("broker acknowledgement", o.broker_sequence != null
        ? `stored as sequence ${o.broker_sequence} on ${o.topic}`
        : (published ? `acknowledged on ${o.topic} (sequence not recorded)` : "not acknowledged yet"),
        published ? "done" : "waiting"));
    }
    complete = await billingSteps(e, steps);
  } catch (err) {
    serviceState(err.service || "cart", err);
    steps.push(step("unavailable", err.message, "failed"));
  }
  if (state.lineage !== current) return;
  $("lineage").replaceChildren(...steps);
  const waited = Date.now() - current.started;
  if (complete) {
    setMessage("lineage-message", `Event ${current.eventId}: the whole path.`, "ok");
  } else if (waited < LINEAGE_GIVE_UP_MS) {
    setMessage("lineage-message", `Event ${current.eventId}: following it as it moves on…`, "waiting");
    current.timer = setTimeout(() => refreshLineage(current), LINEAGE_EVERY_MS);
  } else {
    setMessage("lineage-message", `Event ${current.eventId} has not gone further for two minutes; see the health strip and dead letters.`, "bad");
  }
}

async function billingSteps(e, steps) {
  const query = `cart_id=${encodeURIComponent(e.aggregate_id)}&version=${e.version}`;
  const handled = await call("billing", `/billing/events/${encodeURIComponent(e.event_id)}?${query}`);
  serviceState("billing", null);
  if (!handled.ok) {
    steps.push(step("billing", handled.status === 404
      ? "not handled by billing yet (no lineage past the broker yet)" : detail(handled), "waiting"));
    return false;
  }
  const h = handled.body;
  // Where billing got it: the broker is the fast path; the cart store heals what it lost.
  const via = {
    broker: "",
    repair: " from the event store (the broker had not brought it: gap repair)",
    "catch-up": " from the event store's feed (the broker never brought it: catch-up)",
  }[h.applied_via] || "";
  const texts = {
    applied: h.applied_at ? `applied by billing${via} at ${when(h.applied_at)}`
      : "applied by billing (its bill is past this version; the time is kept only for recent events)",
    duplicate: `a duplicate: billing had applied this version already (${when(h.last_seen_at)})`,
    deferred: `deferred at ${when(h.last_seen_at)}: billing waits for an earlier version of the cart`,
    rejected: `rejected at ${when(h.last_seen_at)} and sent to the dead letters: ${h.last_error || ""}`,
  };
  const counts = Object.entries(h.counts).filter(([k]) => k !== "applied")
    .map(([k, n]) => `${n}× ${k}`).join(", ");
  steps.push(step("billing", texts[h.outcome] + (counts ? ` (also seen: ${counts})` : ""),
    h.outcome === "applied" ? "done" : (h.outcome === "rejected" ? "failed" : "waiting")));
  if (h.outcome !== "applied") return false;
  const invoice = await call("billing", `/invoices/${encodeURIComponent(e.aggregate_id)}`);
  steps.push(invoice.ok
    ? step("invoice", `${invoice.body.invoice_id}: total ${money(invoice.body.total_cents)}, issued ${when(invoice.body.issued_at)}`, "done")
    : step("invoice", "none yet: the cart is not checked out, so the event sits in its running bill", "waiting"));
  return true;
}

// --- billing panel ------------------------------------------------------------------------

function clearBilling(text) {
  $("bill").replaceChildren();
  $("invoice").replaceChildren();
  setMessage("bill-message", text);
}

function linesTable(lines) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...["item", "qty", "unit", "amount"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...Object.entries(lines).map(([item, line]) => el("tr", {},
      el("td", { text: item + (line.unpriced ? " (no price)" : "") }),
      el("td", { text: String(line.quantity) }),
      el("td", { text: money(line.unit_price_cents) }),
      el("td", { text: money(line.amount_cents) })))));
}

async function refreshBilling() {
  const cart = state.cart;
  if (!cart) return;
  const id = encodeURIComponent(cart.id);
  try {
    const [bill, invoice] = await Promise.all([
      call("billing", `/billing/carts/${id}`), call("billing", `/invoices/${id}`)]);
    serviceState("billing", null);
    if (state.cart !== cart) return;
    if (!bill.ok) {
      clearBilling(`Billing has no bill for ${cart.id} yet: ${detail(bill)}`);
      return;
    }
    setMessage("bill-message", "");
    $("bill").replaceChildren(
      el("h3", { text: `Running bill of ${cart.id} (up to version ${bill.body.last_version})` }),
      linesTable(bill.body.lines), el("p", { text: `total ${money(bill.body.total_cents)}` }));
    $("invoice").replaceChildren(...(invoice.ok
      ? [el("h3", { text: `Invoice ${invoice.body.invoice_id}` }), linesTable(invoice.body.lines),
         el("p", { text: `total ${money(invoice.body.total_cents)}, issued ${when(invoice.body.issued_at)}` })]
      : [el("p", { class: "hint", text: "No invoice yet: billing issues one when the cart is checked out." })]));
  } catch (err) {
    serviceState("billing", err);
    clearBilling(err.message);
  }
}

async function loadDeadLetters() {
  let result;
  try {
    result = await call("billing", "/deadletters?limit=100");
    serviceState("billing", null);
  } catch (err) {
    serviceState("billing", err);
    setMessage("deadletter-message", err.message, "bad");
    return;
  }
  const rows = $("deadletter-rows");
  if (!result.ok) {
    setMessage("deadletter-message", `Cannot list dead letters: ${detail(result)}`, "bad");
    return;
  }
  rows.replaceChildren(...result.body.map((letter) => {
    const replay = el("button", { type: "button", class: "secondary", "data-testid": `replay-${letter.sequence}`, text: "Replay" });
    replay.addEventListener("click", () => replayDeadLetter(letter.sequence, replay));
    const what = letter.event_type
      ? `${letter.event_type} v${letter.version} of ${letter.cart_id}` : letter.message_id;
    return el("tr", { "data-sequence": String(letter.sequence) },
      el("td", { text: String(letter.sequence) }), el("td", { text: what }),
      el("td", { text: letter.error }), el("td", { text: when(letter.failed_at) }), el("td", {}, replay));
  }));
  if (result.body.length === 0) {
    rows.append(el("tr", {}, el("td", { colspan: "5", class: "hint", text: "None: billing has processed everything it received." })));
  }
}

async function replayDeadLetter(sequence, button) {
  button.disabled = true;
  const headers = {};
  const token = $("api-token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`; // else the read token, if any
  try {
    const result = await call("billing", `/deadletters/${sequence}/replay`, { method: "POST", headers });
    if (result.ok) {
      setMessage("deadletter-message", `Replayed dead letter ${sequence}: published again as ${result.body.message_id}.`, "ok");
    } else if (result.status === 401) {
      setMessage("deadletter-message", "Replaying needs the API token (MSC_API_TOKEN): enter it above.", "bad");
    } else {
      setMessage("deadletter-message", `Dead letter ${sequence} was not replayed: ${detail(result)}`, "bad");
    }
  } catch (err) {
    setMessage("deadletter-message", err.message, "bad");
  }
  button.disabled = false;
  await loadDeadLetters();
}

// --- health strip -------------------------------------------------------------------------

async function refreshHealth() {
  try {
    const outbox = await call("cart", "/outbox");
    serviceState("cart", null);
    if (outbox.ok) {
      const o = outbox.body;
      setHealth("health-outbox", `outbox: ${o.pending} pending`, o.pending > 0 ? "waiting" : "ok");
      setHealth("health-oldest", `oldest unpublished: ${o.oldest_age_seconds.toFixed(1)} s`,
        o.oldest_age_seconds > 5 ? "bad" : "ok");
    }
  } catch (err) {
    serviceState("cart", err);
    setHealth("health-outbox", "outbox: cart service down", "bad");
    setHealth("health-oldest", "oldest unpublished: ?", "bad");
  }
  try {
    const status = await call("billing", "/billing/status");
    serviceState("billing", null);
    if (status.ok) {
      const s = status.body;
      setHealth("health-lag", s.consumer_lag == null ? "consumer lag: ?" : `consumer lag: ${s.consumer_lag}`,
        s.consumer_lag == null ? "waiting" : (s.consumer_lag > 100 ? "bad" : "ok"));
      setHealth("health-dead", s.dead_letters == null ? "dead letters: ?" : `dead letters: ${s.dead_letters}`,
        s.dead_letters ? "bad" : "ok");
      if (s.dead_letters !== state.deadLetterCount) {
        state.deadLetterCount = s.dead_letters;
        loadDeadLetters();
      }
    }
  } catch (err) {
    serviceState("billing", err);
    setHealth("health-lag", "consumer lag: billing down", "bad");
    setHealth("health-dead", "dead letters: billing down", "bad");
  }
  if (state.cart) refreshBilling();
}

// --- start --------------------------------------------------------------------------------

async function start() {
  document.querySelectorAll(".origin").forEach((node) => { node.textContent = location.origin; });
  try {
    const config = await call("cart", "/ui/config.json");
    state.billingUrl = config.body.billing_url.replace(/\/$/, "");
  } catch (err) {
    showBanner(err.message);
    return;
  }
  $("cart-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    openCart($("cart-id").value.trim());
  });
  $("version-slider").addEventListener("input", (input) => showVersion(Number(input.target.value)));
  $("version-prev").addEventListener("click", () => showVersion(state.cart.version - 1));
  $("version-next").addEventListener("click", () => showVersion(state.cart.version + 1));
  $("api-token").value = sessionStorage.getItem("msc-api-token") || "";
  $("api-token").addEventListener("change", (change) => sessionStorage.setItem("msc-api-token", change.target.value));
  startFeed();
  refreshHealth();
  loadDeadLetters();
  setInterval(refreshHealth, HEALTH_EVERY_MS);
  const wanted = new URLSearchParams(location.hash.slice(1));
  if (wanted.get("cart")) openCart(wanted.get("cart"));
}

start();
