// The timeline web client: plain JavaScript, no build step, no third-party code.
// Everything user-written is inserted with textContent, never as HTML.
"use strict";

// How often the page asks for new posts while visible. A refresh with `after` is one indexed
// query returning only what arrived, so 15 s keeps the "N new posts" button timely for about
// four cheap requests a minute per open tab. `?poll_ms=` overrides it (demos, browser tests),
// never below POLL_MIN_MS.
const POLL_VISIBLE_MS = 15000;
const POLL_MIN_MS = 500;
// A hidden tab nobody reads polls this much less often; coming back polls at once.
const POLL_HIDDEN_FACTOR = 8;
// After an error (503, network) the interval doubles, up to this, so an outage is not hammered.
const POLL_MAX_MS = 5 * 60 * 1000;
const PAGE_SIZE = 20;
// The API's largest page: one refresh fetches at most this many new posts.
const REFRESH_LIMIT = 100;
// The read marker is sent at most this often while scrolling (it only moves forward).
const MARKER_DELAY_MS = 1000;
const FRIENDS_PAGE = 50;
const TEXT_MAX = 5000;
const TOKEN_KEY = "timeline.token";
const HANDLE_KEY = "timeline.handle";
// This browser's client registration with the Mastodon API (`POST /api/v1/apps`), made once
// and kept: signing up and in with a password go through its OAuth endpoints.
const APP_KEY = "timeline.app";
const APP_NAME = "Timeline web client";
const SCOPES = "read write follow";
const OOB = "urn:ietf:wg:oauth:2.0:oob";

const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem(TOKEN_KEY),
  handle: localStorage.getItem(HANDLE_KEY),
  newestCursor: null, // newest post shown or waiting behind the button
  olderCursor: null,
  pending: [], // arrived posts, newest first, not shown until the button is used
  pendingGap: false, // more arrived than one refresh returns
  shown: new Set(),
  pollTimer: null,
  pollDelay: 0,
  failures: 0,
  idempotencyKey: null, // the key of the post being sent (kept for its retries)
  readUpTo: null, // newest status id seen on screen
  markedUpTo: null,
  markerTimer: null,
  friendsCursor: null,
};

function pollInterval() {
  const asked = Number(new URLSearchParams(location.search).get("poll_ms"));
  return Number.isFinite(asked) && asked > 0 ? Math.max(asked, POLL_MIN_MS) : POLL_VISIBLE_MS;
}

// -- talking to the API ----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, { body, headers = {}, auth = true } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (auth && state.token) init.headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", "The service cannot be reached. Check your connection.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (typeof error === "string") throw mastodonError(response.status, data);
    throw new ApiError(response.status, error.code || "http_error", error.message || "");
  }
  return data;
}

// The Mastodon API's errors: `{"error": message}`, OAuth's `{"error": code,
// "error_description": message}`, and registration's per-field `details`.
function mastodonError(status, data) {
  if (data.details) {
    const [field, problems] = Object.entries(data.details)[0];
    const err = new ApiError(status, problems[0].error, `${field} ${problems[0].description}`);
    err.field = field;
    return err;
  }
  if (data.error_description) return new ApiError(status, data.error, data.error_description);
  return new ApiError(status, "mastodon", data.error);
}

// What each error the API returns means to the person using the page.
function explain(err) {
  const detail = err.message ? ` (${err.message})` : "";
  switch (err.status) {
    case 0:
      return err.message;
    case 400:
      if (err.code === "invalid_grant") return "Wrong handle, e-mail or password.";
      return `The request was malformed${detail}.`;
    case 401:
      return "Your token is not valid (any more). Sign in again.";
    case 404:
      return "Not found: it does not exist, or it is not visible to you.";
    case 409:
      if (err.code === "handle_taken") return "That handle is taken; choose another one.";
      return `That clashes with something that just happened${detail}. Try again.`;
    case 429:
      return "Too many failed sign-ins. Wait a few minutes, then try again.";
    case 413:
      return "That is too large to send. A post holds at most 5000 characters.";
    case 422:
      if (err.code === "ERR_TAKEN" && err.field === "username") {
        return "That handle is taken; choose another one.";
      }
      if (err.code === "ERR_TAKEN") return "That e-mail address is taken.";
      return `Please check what you entered${detail}.`;
    case 503:
      return "The service's database is unavailable right now. Try again in a moment.";
    default:
      return `Something went wrong (HTTP ${err.status})${detail}.`;
  }
}

function showError(err) {
  const box = $("error");
  box.textContent = err instanceof ApiError ? explain(err) : String(err);
  box.hidden = false;
  if (err instanceof ApiError && err.status === 401) signOut({ keepMessage: true });
}

function notify(text) {
  $("error").hidden = true;
  $("notice").textContent = text;
}

function clearMessages() {
  $("error").hidden = true;
  $("notice").textContent = "";
}

// -- signing up, in and out -------------------------------------------------------------------

function remember(token, handle) {
  state.token = token;
  state.handle = handle;
  localStorage.setItem(TOKEN_KEY, token);
  localStorage.setItem(HANDLE_KEY, handle);
}

// The browser's client registration, made on first use. `fresh` registers again (the one kept
// was refused: the service's database was reset, say).
async function clientApp(fresh = false) {
  const kept = fresh ? null : JSON.parse(localStorage.getItem(APP_KEY) || "null");
  if (kept) return kept;
  const body = { client_name: APP_NAME, redirect_uris: OOB, scopes: SCOPES };
  const app = await api("POST", "/api/v1/apps", { body, auth: false });
  const creds = { client_id: app.client_id, client_secret: app.client_secret };
  localStorage.setItem(APP_KEY, JSON.stringify(creds));
  return creds;
}

// POST /oauth/token with the browser's client credentials, registering again once if they
// are refused.
async function oauthToken(grant) {
  for (const fresh of [false, true]) {
    const creds = await clientApp(fresh);
    try {
      return await api("POST", "/oauth/token", {
        body: { ...grant, ...creds, scope: SCOPES },
        auth: false,
      });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === "invalid_client") || fresh) throw err;
    }
  }
  throw new Error("unreachable");
}

async function signUp(event) {
  event.preventDefault();
  const form = event.target;
  const handle = form.handle.value.trim();
  try {
    // An application token registers the account; it is revoked once used.
    const appToken = (await oauthToken({ grant_type: "client_credentials" })).access_token;
    const body = {
      username: handle,
      email: form.email.value.trim(),
      password: form.password.value,
      agreement: true,
    };
    const auth = { Authorization: `Bearer ${appToken}` };
    const minted = await api("POST", "/api/v1/accounts", { body, headers: auth, auth: false });
    revoke(appToken);
    remember(minted.access_token, handle);
    form.reset();
    await enter();
    notify(`Welcome, @${handle}. You are signed in in this browser.`);
  } catch (err) {
    showError(err);
  }
}

async function signIn(event) {
  event.preventDefault();
  const form = event.target;
  try {
    const grant = { grant_type: "password", username: form.login.value.trim() };
    const minted = await oauthToken({ ...grant, password: form.password.value });
    await signInWith(minted.access_token);
    form.reset();
  } catch (err) {
    showError(err);
  }
}

async function signInWithToken(event) {
  event.preventDefault();
  try {
    await signInWith(event.target.token.value.trim());
    event.target.reset();
  } catch (err) {
    showError(err);
  }
}

async function signInWith(token) {
  state.token = token;
  try {
    const me = await api("GET", "/me");
    remember(token, me.handle);
    await enter();
    notify(`Signed in as @${me.handle}.`);
  } catch (err) {
    state.token = null;
    throw err;
  }
}

// Best effort: a token the browser's client minted stops working; any other is left alone
// (the service answers the same either way).
function revoke(token) {
  const creds = JSON.parse(localStorage.getItem(APP_KEY) || "null");
  if (!creds || !token) return;
  api("POST", "/oauth/revoke", { body: { ...creds, token }, auth: false }).catch(() => {});
}

function signOut({ keepMessage = false } = {}) {
  revoke(state.token);
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(HANDLE_KEY);
  state.token = null;
  state.handle = null;
  stopPolling();
  // Nothing of this person's reading carries over to whoever signs in next.
  Object.assign(state, {
    newestCursor: null,
    olderCursor: null,
    pending: [],
    pendingGap: false,
    shown: new Set(),
    readUpTo: null,
    markedUpTo: null,
    idempotencyKey: null,
  });
  if (state.markerTimer !== null) clearTimeout(state.markerTimer);
  state.markerTimer = null;
  readObserver.disconnect();
  $("timeline").replaceChildren();
  updateNewButton();
  $("signed-in").hidden = true;
  $("session").hidden = true;
  $("signed-out").hidden = false;
  if (!keepMessage) clearMessages();
}

async function enter() {
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  $("session").hidden = false;
  $("whoami").textContent = `@${state.handle}`;
  clearMessages();
  await Promise.all([loadTimeline(), loadFriends()]);
  if (state.token) schedulePoll(pollInterval());
}

// -- the timeline ---------------------------------------------------------------------------

function renderItem(status) {
  const li = document.createElement("li");
  li.className = "post";
  li.tabIndex = 0;
  li.dataset.id = status.id;
  const head = document.createElement("p");
  head.className = "post-head";
  const author = document.createElement("strong");
  author.textContent = `@${status.author}`;
  const time = document.createElement("time");
  time.dateTime = status.created_at;
  time.textContent = new Date(status.created_at).toLocaleString();
  head.append(author, " · ", time);
  const text = document.createElement("p");
  text.className = "post-text";
  text.textContent = status.text;
  li.append(head, text);
  if (status.author === state.handle) {
    const del = document.createElement("button");
    del.type = "button";
    del.className = "link";
    del.textContent = "Delete";
    del.setAttribute("aria-label", "Delete this post");
    del.addEventListener("click", () => deleteStatus(status.id, li));
    li.append(del);
  }
  readObserver.observe(li);
  return li;
}

function setOlder(cursor) {
  state.olderCursor = cursor;
  $("load-older").hidden = cursor === null;
}

function updateEmpty() {
  $("timeline-empty").hidden = $("timeline").children.length > 0;
}

async function loadTimeline() {
  try {
    const page = await api("GET", `/timeline?limit=${PAGE_SIZE}`);
    const list = $("timeline");
    readObserver.disconnect(); // the posts it watched are replaced
    list.replaceChildren(...page.items.map(renderItem));
    state.shown = new Set(page.items.map((s) => s.id));
    state.newestCursor = page.newest_cursor;
    state.pending = [];
    state.pendingGap = false;
    updateNewButton();
    setOlder(page.next_cursor);
    updateEmpty();
    await refreshUnread();
  } catch (err) {
    showError(err);
  }
}

async function loadOlder() {
  if (!state.olderCursor) return;
  const button = $("load-older");
  button.disabled = true;
  try {
    const page = await api("GET", `/timeline?limit=${PAGE_SIZE}&before=${state.olderCursor}`);
    const fresh = page.items.filter((s) => !state.shown.has(s.id));
    fresh.forEach((s) => state.shown.add(s.id));
    $("timeline").append(...fresh.map(renderItem));
    setOlder(page.next_cursor);
    notify(fresh.length ? `Loaded ${fresh.length} older posts.` : "No older posts.");
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

// New posts wait behind the button; only they are fetched (`after` the newest one known).
async function poll() {
  state.pollTimer = null;
  if (!state.token) return;
  try {
    // With nothing known yet (an empty timeline), the first page is what arrived.
    const after = state.newestCursor === null ? "" : `&after=${state.newestCursor}`;
    const page = await api("GET", `/timeline?limit=${REFRESH_LIMIT}${after}`);
    if (page.items.length) {
      // One's own posts are shown when posted; they do not count as new.
      const fresh = page.items.filter((s) => !state.shown.has(s.id));
      state.pending = [...fresh, ...state.pending];
      state.pendingGap = state.pendingGap || page.gap;
      state.newestCursor = page.newest_cursor;
      updateNewButton();
    }
    await refreshUnread();
    state.failures = 0;
  } catch (err) {
    state.failures += 1;
    if (err.status === 401) {
      showError(err);
      return;
    }
    if (state.failures === 1) showError(err);
  }
  const base = pollInterval() * (document.hidden ? POLL_HIDDEN_FACTOR : 1);
  schedulePoll(Math.min(base * 2 ** state.failures, POLL_MAX_MS));
}

function schedulePoll(delay) {
  stopPolling();
  state.pollDelay = delay;
  state.pollTimer = setTimeout(poll, delay);
}

function stopPolling() {
  if (state.pollTimer !== null) clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

function updateNewButton() {
  const button = $("new-posts");
  const n = state.pending.length;
  button.hidden = n === 0;
  const count = state.pendingGap ? `${n}+` : String(n);
  button.textContent = `${count} new post${n === 1 && !state.pendingGap ? "" : "s"}`;
}

// The item being read: the first one whose top is inside the viewport (or the last one above).
function anchorItem() {
  const items = $("timeline").children;
  for (const item of items) {
    if (item.getBoundingClientRect().bottom > 0) return item;
  }
  return null;
}

function showPending() {
  if (state.pending.length === 0) return;
  if (state.pendingGap) {
    // More arrived than one refresh returns: the hole between cannot be shown in place.
    loadTimeline();
    return;
  }
  const atTop = window.scrollY === 0;
  const anchor = atTop ? null : anchorItem();
  const before = anchor ? anchor.getBoundingClientRect().top : 0;
  const fresh = state.pending.filter((s) => !state.shown.has(s.id));
  fresh.forEach((s) => state.shown.add(s.id));
  const nodes = fresh.map(renderItem);
  nodes.forEach((n) => n.classList.add("fresh"));
  $("timeline").prepend(...nodes);
  state.pending = [];
  updateNewButton();
  updateEmpty();
  // Keep what was being read exactly where it was on screen; at the very top, the new posts
  // simply appear above it (it moves down but stays in view unless a screenful arrived).
  if (anchor) window.scrollBy(0, anchor.getBoundingClientRect().top - before);
  notify(`${fresh.length} new post${fresh.length === 1 ? "" : "s"} shown above.`);
  if (nodes.length && atTop) nodes[0].focus({ preventScroll: true });
}

async function deleteStatus(id, li) {
  try {
    await api("DELETE", `/statuses/${id}`);
    li.remove();
    state.shown.delete(id);
    updateEmpty();
    notify("Post deleted.");
    await refreshUnread();
  } catch (err) {
    showError(err);
  }
}

// -- posting ---------------------------------------------------------------------------------

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function post(event) {
  event.preventDefault();
  const text = $("compose-text").value;
  const button = $("compose-submit");
  if (button.disabled) return; // a second click while the first is in flight
  button.disabled = true;
  // The same key until this text is posted: a retry after a lost answer replays, never repeats.
  state.idempotencyKey = state.idempotencyKey || newKey();
  try {
    const status = await api("POST", "/statuses", {
      body: { text },
      headers: { "Idempotency-Key": state.idempotencyKey },
    });
    state.idempotencyKey = null;
    $("compose-text").value = "";
    updateCount();
    if (!state.shown.has(status.id)) {
      state.shown.add(status.id);
      $("timeline").prepend(renderItem(status));
      updateEmpty();
    }
    notify("Posted.");
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

function updateCount() {
  const n = $("compose-text").value.length;
  $("compose-count").textContent = `${n} / ${TEXT_MAX}`;
}

// -- read marker and unread badge ------------------------------------------------------------

function idNewer(a, b) {
  // Status ids are 24 hex digits growing with time: equal lengths compare as strings.
  return b === null || a > b;
}

const readObserver = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const id = entry.target.dataset.id;
      if (idNewer(id, state.readUpTo)) state.readUpTo = id;
    }
    if (state.readUpTo && idNewer(state.readUpTo, state.markedUpTo) && !state.markerTimer) {
      state.markerTimer = setTimeout(sendMarker, MARKER_DELAY_MS);
    }
  },
  { threshold: 0.6 },
);

async function sendMarker() {
  state.markerTimer = null;
  const id = state.readUpTo;
  if (!state.token || !id || !idNewer(id, state.markedUpTo)) return;
  try {
    // No version: the server keeps the newest of concurrent tabs' markers.
    const markers = await api("POST", "/markers", { body: { home: { last_read_id: id } } });
    state.markedUpTo = markers.home.last_read_id;
    await refreshUnread();
  } catch (err) {
    showError(err);
  }
}

async function refreshUnread() {
  const badge = $("unread-badge");
  const unread = await api("GET", "/timeline/unread_count");
  badge.hidden = unread.count === 0;
  const n = unread.capped ? `${unread.count}+` : String(unread.count);
  badge.textContent = `${n} unread`;
  document.title = unread.count ? `(${n}) Timeline` : "Timeline";
}

// -- friends ---------------------------------------------------------------------------------

function personRow(label, actions) {
  const li = document.createElement("li");
  const name = document.createElement("span");
  name.textContent = label;
  li.append(name);
  for (const [text, aria, handler] of actions) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "small";
    b.textContent = text;
    b.setAttribute("aria-label", aria);
    b.addEventListener("click", handler);
    li.append(b);
  }
  return li;
}

function friendRow(f) {
  const label = f.display_name ? `@${f.handle} (${f.display_name})` : `@${f.handle}`;
  return personRow(label, [["Unfriend", `Unfriend @${f.handle}`, () => unfriend(f.handle)]]);
}

async function loadFriends() {
  try {
    const [requests, friends] = await Promise.all([
      api("GET", "/friend-requests"),
      api("GET", `/friends?limit=${FRIENDS_PAGE}`),
    ]);
    $("incoming").replaceChildren(
      ...requests.incoming.map((r) =>
        personRow(`@${r.from}`, [
          ["Accept", `Accept @${r.from}`, () => acceptRequest(r.from)],
          ["Decline", `Decline @${r.from}`, () => deleteRequest(r.from, "Declined")],
        ]),
      ),
    );
    $("outgoing").replaceChildren(
      ...requests.outgoing.map((r) =>
        personRow(`@${r.to}`, [
          ["Cancel", `Cancel the request to @${r.to}`, () => deleteRequest(r.to, "Cancelled")],
        ]),
      ),
    );
    $("friends").replaceChildren(...friends.items.map(friendRow));
    state.friendsCursor = friends.next_cursor;
    $("more-friends").hidden = friends.next_cursor === null;
    for (const id of ["incoming", "outgoing", "friends"]) emptyNote($(id));
  } catch (err) {
    showError(err);
  }
}

function emptyNote(list) {
  if (list.children.length) return;
  const li = document.createElement("li");
  li.className = "help";
  li.textContent = "None.";
  list.append(li);
}

async function moreFriends() {
  try {
    const page = await api("GET", `/friends?limit=${FRIENDS_PAGE}&cursor=${state.friendsCursor}`);
    $("friends").append(...page.items.map(friendRow));
    state.friendsCursor = page.next_cursor;
    $("more-friends").hidden = page.next_cursor === null;
  } catch (err) {
    showError(err);
  }
}

async function sendRequest(event) {
  event.preventDefault();
  const to = event.target.to.value.trim();
  try {
    const result = await api("POST", "/friend-requests", { body: { to } });
    event.target.reset();
    await loadFriends();
    notify(
      result.status === "accepted"
        ? `You and @${to} are friends now.`
        : `Friend request sent to @${to}.`,
    );
  } catch (err) {
    showError(err);
  }
}

async function acceptRequest(handle) {
  try {
    await api("POST", `/friend-requests/${encodeURIComponent(handle)}/accept`);
    await loadFriends();
    notify(`You and @${handle} are friends now. Their posts appear shortly.`);
  } catch (err) {
    showError(err);
  }
}

async function deleteRequest(handle, verb) {
  try {
    await api("DELETE", `/friend-requests/${encodeURIComponent(handle)}`);
    await loadFriends();
    notify(`${verb}: @${handle}.`);
  } catch (err) {
    showError(err);
  }
}

async function unfriend(handle) {
  try {
    await api("DELETE", `/friends/${encodeURIComponent(handle)}`);
    await loadFriends();
    notify(`You and @${handle} are no longer friends. Their posts leave your timeline shortly.`);
  } catch (err) {
    showError(err);
  }
}

// -- keyboard --------------------------------------------------------------------------------

function onKey(event) {
  const target = event.target;
  const typing = target.closest && target.closest("input, textarea, select, [contenteditable]");
  if (typing || event.altKey || event.ctrlKey || event.metaKey || $("signed-in").hidden) return;
  const items = Array.from($("timeline").children);
  const current = target.closest ? target.closest(".post") : null;
  const at = current ? items.indexOf(current) : -1;
  if (event.key === "j" && items.length) {
    items[Math.min(at + 1, items.length - 1)].focus();
  } else if (event.key === "k" && items.length) {
    items[Math.max(at - 1, 0)].focus();
  } else if (event.key === "n" && state.pending.length) {
    showPending();
  } else if (event.key === "/") {
    $("compose-text").focus();
  } else {
    return;
  }
  event.preventDefault();
}

// -- start -----------------------------------------------------------------------------------

function start() {
  $("signup-form").addEventListener("submit", signUp);
  $("signin-form").addEventListener("submit", signIn);
  $("token-form").addEventListener("submit", signInWithToken);
  $("sign-out").addEventListener("click", () => signOut());
  $("compose-form").addEventListener("submit", post);
  $("compose-text").addEventListener("input", () => {
    state.idempotencyKey = null; // another text is another post
    updateCount();
  });
  $("refresh").addEventListener("click", () => {
    loadTimeline();
    loadFriends();
  });
  $("new-posts").addEventListener("click", showPending);
  $("load-older").addEventListener("click", loadOlder);
  $("request-form").addEventListener("submit", sendRequest);
  $("more-friends").addEventListener("click", moreFriends);
  document.addEventListener("keydown", onKey);
  document.addEventListener("visibilitychange", () => {
    if (!state.token) return;
    // Back: look at once. Hidden: the next poll comes later (see poll()).
    if (!document.hidden) schedulePoll(0);
  });
  if (state.token && state.handle) {
    enter();
  } else {
    $("signed-out").hidden = false;
  }
}

start();
