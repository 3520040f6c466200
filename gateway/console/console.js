/* The webhook gateway's console: signs in with an admin token (kept in sessionStorage only) and
 * works through the management API alone. No framework, no build step, no innerHTML with data. */
"use strict";

(() => {
  const TOKEN_KEY = "webhook-gateway-console-token";
  const REFUSED = "The gateway refused this token (401). Use one of admin.tokens.";
  const UNREACHABLE = "The gateway cannot be reached. Check that it is running, then try again.";
  const SECRET_KEY = /pass(word)?|secret|token|authorization|api[-_]?key|credential|private[-_]?key/i;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PAGE = 50;
  const POLL_FIRST = 2000; // a pending delivery's page looks again after 2 s,
  const POLL_MAX = 15000;  // then less often, up to every 15 s

  const $ = (id) => document.getElementById(id);
  const traceMeta = document.querySelector('meta[name="gateway-trace-ui"]');
  const traceUI = traceMeta ? traceMeta.getAttribute("content").trim() : "";

  let gen = 0;          // bumped on every navigation and sign-out: older async work is dropped
  let timers = [];
  let prevPath = null;

  // ---- DOM helpers --------------------------------------------------------------------------

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  // fill replaces an element's children, skipping null and false (replaceChildren would print them).
  const fill = (el, ...children) => { el.replaceChildren(); return append(el, children); };

  // h("a", {href, class}, ...children): attributes through setAttribute, on* as listeners.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    return append(el, children);
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return append(el, children);
  }

  function time(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return h("time", { datetime: iso, title: iso },
      d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }));
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.round(seconds);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  const ms = (n) => (typeof n === "number" ? `${Math.round(n)} ms` : "—");
  const subHref = (id) => `#/subscriptions/${encodeURIComponent(id)}`;
  const deliveryHref = (id) => `#/deliveries/${encodeURIComponent(id)}`;
  const code = (text) => h("code", null, text);

  function table(id, headings, caption) {
    const tbody = h("tbody");
    const t = h("table", { id },
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", null, h("tr", null, headings.map((x) => h("th", { scope: "col" }, x)))), tbody);
    return { table: t, tbody, wrap: h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption || id }, t) };
  }

  function badge(status, id) {
    return h("span", { class: `badge badge-${status}`, id }, status);
  }

  function redact(v) {
    if (Array.isArray(v)) return v.map(redact);
    if (v && typeof v === "object") {
      const out = {};
      for (const [k, x] of Object.entries(v)) out[k] = SECRET_KEY.test(k) ? "********" : redact(x);
      return out;
    }
    return v;
  }

  function traceLink(traceId) {
    if (!traceId) return "—";
    if (!traceUI || !/^https?:\/\//i.test(traceUI)) return code(traceId);
    return h("a", {
      class: "trace", href: traceUI.split("{trace_id}").join(encodeURIComponent(traceId)),
      target: "_blank", rel: "noopener noreferrer", title: `Trace ${traceId} (opens in a new tab)`,
    }, code(traceId));
  }

  // maskSecrets hides the values of fields named like secrets in a response body: through the
  // JSON when the body is JSON (whatever the values' types), by pattern when it is cut short or
  // not JSON at all.
  function maskSecrets(text) {
    try {
      const v = JSON.parse(text);
      if (v && typeof v === "object") return JSON.stringify(redact(v), null, 2);
    } catch (e) { /* not whole JSON: mask by pattern */ }
    // Strings, numbers and literals only: an object or array value is left for its own keys.
    const value = String.raw`"(?:[^"\\]|\\.)*"?|[^,}\]\s{\[]+`;
    return text.replace(new RegExp(String.raw`("((?:[^"\\]|\\.)*)"\s*:\s*)(${value})`, "g"),
      (all, pre, key) => (SECRET_KEY.test(key) ? `${pre}"********"` : all));
  }

  function bodyExcerpt(body, encoding) {
    if (body === null || body === undefined || body === "") return "—";
    if (encoding === "base64") return h("span", { class: "muted" }, "binary body (base64, not shown)");
    // The gateway redacts credentials it knows of; fields named like secrets are hidden here too.
    return h("pre", { class: "excerpt" }, maskSecrets(String(body)));
  }

  // ---- API ----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem, message) {
      super(message);
      this.status = status;
      this.problem = problem;
    }
  }

  function nextLink(header) {
    const m = header && /<([^>]+)>\s*;\s*rel="?next"?/.exec(header);
    // Only a path on this gateway: not another origin, nor "//host/…", which is one too.
    return m && m[1].startsWith("/") && !m[1].startsWith("//") ? m[1] : null;
  }

  async function api(path, method = "GET", body) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      signOut("");
      throw new ApiError(401, null, "signed out");
    }
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json, application/problem+json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, null, UNREACHABLE);
    }
    const text = await res.text().catch(() => "");
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (res.status === 401) {
      signOut(REFUSED);
      throw new ApiError(401, data, REFUSED);
    }
    if (!res.ok) {
      const p = data && typeof data === "object" ? data : null;
      throw new ApiError(res.status, p, (p && (p.detail || p.title)) || `HTTP ${res.status}`);
    }
    return { data, next: nextLink(res.headers.get("Link")) };
  }

  async function allPages(path) {
    let url = path;
    const items = [];
    for (let i = 0; url && i < 50; i++) {
      const { data, next } = await api(url);
      items.push(...data);
      url = next;
    }
    return items;
  }

  // GET /v1/stats, or null while the gateway has none (404).
  async function stats() {
    try {
      return (await api("/v1/stats")).data;
    } catch (e) {
      if (e.status === 404) return null;
      throw e;
    }
  }

  function showError(err) {
    const box = $("error");
    box.replaceChildren();
    if (!err || err.status === 401) return;
    if (!(err instanceof ApiError)) {
      box.append(h("p", null, `Something went wrong in the console: ${err.message || err}`));
      return;
    }
    const p = err.problem;
    if (err.status === 0) box.append(h("p", null, h("strong", null, err.message)));
    else if (p) {
      box.append(h("p", null, h("strong", null, `${p.title || "Error"} (${p.status || err.status})`),
        p.detail ? `: ${p.detail}` : ""));
      if (Array.isArray(p.errors) && p.errors.length) {
        box.append(h("ul", null, p.errors.map((fe) => h("li", null, code(fe.field), ` ${fe.message}`))));
      }
    } else box.append(h("p", null, h("strong", null, `Error (${err.status})`), `: ${err.message}`));
  }

  function showResult(...children) {
    fill($("action-result"), children);
  }

  // ---- sign-in ------------------------------------------------------------------------------

  function clearTimers() {
    timers.forEach(clearTimeout);
    timers = [];
  }

  function later(ctx, fn, delay) {
    timers.push(setTimeout(() => { if (alive(ctx)) fn(); }, delay));
  }

  const alive = (ctx) => ctx.gen === gen;

  function signOut(message) {
    sessionStorage.clear(); // the token is all the console keeps there
    gen++;
    clearTimers();
    prevPath = null;
    const view = $("view");
    view.replaceChildren();
    view.removeAttribute("data-view");
    view.removeAttribute("data-loaded");
    view.removeAttribute("data-refreshed");
    view.hidden = true;
    $("nav").hidden = true;
    $("signout").hidden = true;
    $("error").replaceChildren();
    $("action-result").replaceChildren();
    $("signin-panel").hidden = false;
    $("signin-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function showApp() {
    $("signin-panel").hidden = true;
    $("signin-error").textContent = "";
    $("nav").hidden = false;
    $("signout").hidden = false;
    $("view").hidden = false;
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    const errorBox = $("signin-error");
    if (!token) {
      errorBox.textContent = "Enter an admin token.";
      input.focus();
      return;
    }
    errorBox.textContent = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("/v1/webhooks?limit=1");
    } catch (e) {
      if (e.status !== 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        errorBox.textContent = e.status === 0 ? UNREACHABLE : `The gateway answered ${e.status}: ${e.message}`;
      }
      return;
    }
    input.value = "";
    showApp();
    if (!location.hash.startsWith("#/") || location.hash === "#/") location.hash = "#/overview";
    else route();
  }

  // ---- routing ------------------------------------------------------------------------------

  function parseHash() {
    const raw = location.hash.startsWith("#/") ? location.hash.slice(2) : "overview";
    const q = raw.indexOf("?");
    const path = q < 0 ? raw : raw.slice(0, q);
    const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
    let parts;
    try { parts = path.split("/").filter(Boolean).map(decodeURIComponent); } catch (e) { parts = ["?"]; }
    return { path, parts: parts.length ? parts : ["overview"], params };
  }

  function route() {
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      signOut("");
      return;
    }
    showApp();
    gen++;
    clearTimers();
    const ctx = { gen };
    const { path, parts, params } = parseHash();
    const [section, id, extra] = parts;
    const same = path === prevPath;
    prevPath = path;
    $("error").replaceChildren();
    if (!same) $("action-result").replaceChildren();
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.getAttribute("href") === `#/${section}`) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (extra === undefined && section === "overview" && !id) overview(ctx);
    else if (extra === undefined && section === "subscriptions") id ? subscription(ctx, id) : subscriptions(ctx, params);
    else if (extra === undefined && section === "deliveries") id ? delivery(ctx, id) : deliveries(ctx, params);
    else {
      const body = start("notfound", "Page not found", true);
      body.append(h("p", null, "The console has no such page. ", h("a", { href: "#/overview" }, "Go to the overview"), "."));
      loaded();
    }
  }

  // start renders a view's heading (focused: the user just navigated) and returns its body.
  function start(name, title, focus) {
    const view = $("view");
    view.setAttribute("data-view", name);
    view.removeAttribute("data-loaded");
    view.removeAttribute("data-refreshed");
    const h1 = h("h1", { tabindex: "-1" }, title);
    const body = h("div", { class: "view-body" }, h("p", { class: "muted loading" }, "Loading…"));
    view.replaceChildren(h1, body);
    document.title = `${title} · Webhook gateway console`;
    if (focus) h1.focus();
    return body;
  }

  const loaded = () => $("view").setAttribute("data-loaded", "true");
  const loading = () => $("view").removeAttribute("data-loaded");

  // run calls a view's loader and shows what goes wrong in #error.
  async function run(ctx, fn) {
    try {
      await fn();
    } catch (e) {
      if (alive(ctx)) showError(e);
    }
  }

  // refill replaces a body's content, keeping focus on the element with the same id if any.
  function refill(body, ...children) {
    const a = document.activeElement;
    const sel = !a || !body.contains(a) ? "" : a.id ? `#${CSS.escape(a.id)}`
      : a.getAttribute("href") ? `a[href="${CSS.escape(a.getAttribute("href"))}"]` : "";
    fill(body, children);
    if (sel) (body.querySelector(sel) || $("view").querySelector("h1")).focus();
  }

  // A "Load more" button that appends the next pages of a list to tbody, while current() holds
  // (the list was not reloaded meanwhile).
  function moreButton(ctx, holder, next, tbody, rowFn, current = () => true) {
    holder.replaceChildren();
    if (!next) return;
    const btn = h("button", { type: "button", class: "secondary more" }, "Load more");
    btn.addEventListener("click", () => run(ctx, async () => {
      btn.disabled = true;
      try {
        const page = await api(next);
        if (!alive(ctx) || !current()) return;
        const rows = page.data.map(rowFn);
        tbody.append(...rows);
        moreButton(ctx, holder, page.next, tbody, rowFn, current);
        const nextBtn = holder.querySelector("button");
        if (nextBtn) nextBtn.focus();
        else if (rows.length) (rows[0].querySelector("a") || rows[0]).focus();
      } finally {
        btn.disabled = false;
      }
    }));
    holder.append(btn);
  }

  // ---- subscriptions ------------------------------------------------------------------------

  const subState = (s) => (!s.isActive ? "deactivated" : s.isInErrorState ? "error" : "active");

  function stateCell(s, id) {
    const state = subState(s);
    const parts = [h("span", { class: `badge badge-${state}` }, state)];
    if (state === "error") parts.push(" since ", time(s.detectedErrorStateAt));
    if (state === "deactivated") parts.push(" since ", time(s.deactivatedAt));
    if (s.errorStateReason) parts.push(" — ", h("span", { class: "reason" }, s.errorStateReason));
    return h(id ? "span" : "td", { class: "state", id }, parts);
  }

  function policyText(p) {
    p = p || {};
    return [
      `in flight: ${p.maxInFlight ?? "default"}`,
      `rate: ${p.rateLimit === null || p.rateLimit === undefined ? "no limit" : `${p.rateLimit}/s`}`,
      `order: ${p.ordering ?? "any"}`,
    ].map((x) => h("span", { class: "line" }, x));
  }

  function activityText(a) {
    if (!a) return { rate: "—", last: "—" };
    const total = a.delivered + a.failed;
    const rate = total ? `${Math.round((a.delivered / total) * 100)}% (${a.delivered}/${total})` : "—";
    const result = a.lastStatusCode !== null && a.lastStatusCode !== undefined ? `HTTP ${a.lastStatusCode}` : a.lastError || "";
    return { rate, last: a.lastAttemptAt ? h("span", null, time(a.lastAttemptAt), result ? ` (${result})` : "") : "—" };
  }

  function activityMap(st) {
    const m = new Map();
    for (const a of (st && st.subscriptionActivity) || []) m.set(a.subscriptionId, a);
    return m;
  }

  function subscriptions(ctx, params) {
    const body = start("subscriptions", "Subscriptions", true);
    const initial = ["all", "active", "error", "deactivated"].includes(params.get("state")) ? params.get("state") : "all";
    let subs = [];
    let next = null;
    let acts = new Map();
    const filter = h("select", { id: "state-filter" },
      ["all", "active", "error", "deactivated"].map((v) => h("option", { value: v, selected: v === initial }, v)));
    const t = table("subscriptions", ["Subscription", "State", "Event types", "Policy",
      "Success (last hour)", "Last attempt"], "Subscriptions");
    const more = h("div", { class: "more-holder" });
    const summary = h("p", { class: "muted", "aria-live": "polite" });

    function row(s) {
      const act = activityText(acts.get(s.id));
      return h("tr", { "data-id": s.id },
        h("td", { class: "url" }, h("a", { href: subHref(s.id) }, s.url),
          h("span", { class: "line muted" }, code(s.id)),
          h("span", { class: "line muted" }, `${s.kind}, from ${s.source === "file" ? "gateway.yaml" : "the API"}`)),
        stateCell(s), h("td", { class: "lines" }, (s.events || []).map((e) => h("span", { class: "line" }, e))), h("td", { class: "lines" }, policyText(s.deliveryPolicy)),
        h("td", null, act.rate), h("td", null, act.last));
    }

    function render() {
      const v = filter.value;
      const shown = subs.filter((s) => v === "all" || subState(s) === v);
      t.tbody.replaceChildren(...shown.map(row));
      summary.textContent = `${shown.length} of ${subs.length} loaded subscription${subs.length === 1 ? "" : "s"} shown${next ? "; more can be loaded" : ""}.`;
      more.replaceChildren();
      if (next) {
        more.append(h("button", { type: "button", class: "secondary more", id: "load-more", onclick: (e) => {
          const btn = e.currentTarget;
          btn.disabled = true;
          run(ctx, async () => {
            const page = await api(next).finally(() => { btn.disabled = false; });
            if (!alive(ctx)) return;
            subs = subs.concat(page.data);
            next = page.next;
            render();
            ($("load-more") || filter).focus();
          });
        } }, "Load more"));
      }
    }

    filter.addEventListener("change", () => {
      history.replaceState(null, "", filter.value === "all" ? "#/subscriptions" : `#/subscriptions?state=${filter.value}`);
      render();
    });

    run(ctx, async () => {
      const [page, s] = await Promise.all([api(`/v1/webhooks?limit=${PAGE * 2}`), stats()]);
      if (!alive(ctx)) return;
      subs = page.data;
      next = page.next;
      acts = activityMap(s);
      refill(body,
        h("div", { class: "filters" }, h("div", { class: "field" }, h("label", { for: "state-filter" }, "State"), filter)),
        s ? null : h("p", { class: "note" }, "Success rates and last attempts are not shown: statistics unavailable."),
        summary, t.wrap, more);
      render();
      loaded();
    });
  }

  function subscription(ctx, id) {
    const body = start("subscription", `Subscription ${id}`, true);
    let recoverValue = "";
    const reload = (focus) => run(ctx, async () => {
      loading();
      const [sub, st, page] = await Promise.all([
        api(`/v1/webhooks/${encodeURIComponent(id)}`).then((r) => r.data),
        stats(),
        api(`/v1/webhooks/${encodeURIComponent(id)}/deliveries?limit=${PAGE}`),
      ]);
      if (!alive(ctx)) return;
      const act = activityText(activityMap(st).get(sub.id));
      const headers = sub.headers ? Object.entries(redact(sub.headers)).map(([k, v]) => `${k}: ${v}`).join("; ") : "none";
      const details = h("dl", { class: "details" },
        h("dt", null, "State"), h("dd", null, stateCell(sub, "sub-state")),
        h("dt", null, "URL"), h("dd", { class: "url" }, sub.url),
        h("dt", null, "Kind"), h("dd", null, sub.kind),
        h("dt", null, "Source"), h("dd", null, sub.source === "file" ? "file (gateway.yaml: changed only there)" : "api"),
        h("dt", null, "Event types"), h("dd", null, (sub.events || []).join(", ") || "—"),
        h("dt", null, "Delivery policy"), h("dd", { class: "lines inline" }, policyText(sub.deliveryPolicy)),
        h("dt", null, "Headers"), h("dd", null, headers),
        h("dt", null, "Plugins"), h("dd", null, (sub.plugins || []).map((p) => p.name).join(", ") || "none"),
        h("dt", null, "Success rate (last hour)"), h("dd", null, st ? act.rate : "statistics unavailable"),
        h("dt", null, "Last attempt"), h("dd", null, act.last),
        h("dt", null, "Created"), h("dd", null, time(sub.createdAt)),
        h("dt", null, "Updated"), h("dd", null, time(sub.updatedAt)));

      const actions = h("section", { class: "actions", "aria-labelledby": "actions-title" },
        h("h2", { id: "actions-title" }, "Actions"));
      if (!sub.isActive || sub.isInErrorState) {
        actions.append(h("div", { class: "action" },
          h("button", { type: "button", id: "reactivate", onclick: () => act1(reactivate) }, "Reactivate"),
          h("span", { class: "muted" }, " Clears the error state and delivers again.")));
      }
      const typeSelect = h("select", { id: "test-type" }, (sub.events || []).map((t) => h("option", { value: t }, t)));
      actions.append(h("form", { class: "action", onsubmit: (e) => { e.preventDefault(); act1(() => sendTest(typeSelect.value)); } },
        h("div", { class: "field" }, h("label", { for: "test-type" }, "Test event type"), typeSelect),
        h("button", { type: "submit", id: "send-test" }, "Send test event")));
      const since = h("input", { id: "recover-since", type: "text", value: recoverValue, placeholder: "2h, 7d or 2026-12-01T05:00:00Z",
        autocomplete: "off", spellcheck: "false", "aria-describedby": "recover-help" });
      actions.append(h("form", { class: "action", onsubmit: (e) => { e.preventDefault(); recoverValue = since.value.trim(); act1(() => recover(recoverValue)); } },
        h("div", { class: "field" }, h("label", { for: "recover-since" }, "Recover failed deliveries since"), since,
          h("span", { id: "recover-help", class: "muted" }, "A duration before now (90m, 2h, 7d) or an RFC 3339 time.")),
        h("button", { type: "submit", id: "recover" }, "Recover")));

      const t = table("sub-deliveries", ["Delivery", "Created", "Status", "Event type", "Attempts", "Last result", "Next attempt"], "Deliveries of this subscription");
      const rowFn = (d) => deliveryRow(d, false);
      t.tbody.append(...page.data.map(rowFn));
      const more = h("div", { class: "more-holder" });
      moreButton(ctx, more, page.next, t.tbody, rowFn);
      refill(body, details, actions,
        h("h2", null, "Deliveries ", h("a", { href: `#/deliveries?subscription=${encodeURIComponent(id)}`, class: "small" }, "(filter all deliveries)")),
        t.wrap, page.data.length ? null : h("p", { class: "muted" }, "No deliveries yet."), more);
      if (focus) $(focus)?.focus();
      loaded();
    });

    // act1 runs one action, then reloads the page, keeping focus on the action's control.
    function act1(fn) {
      const focused = document.activeElement ? document.activeElement.id : "";
      $("error").replaceChildren();
      showResult("Working…");
      run(ctx, async () => {
        let result;
        try {
          result = await fn();
        } catch (e) {
          showResult("");
          throw e;
        } finally {
          if (alive(ctx)) await reload(focused);
        }
        // Shown once the page shows the new state, so the two agree.
        if (alive(ctx)) showResult(result);
      });
    }

    async function reactivate() {
      await api(`/v1/webhooks/${encodeURIComponent(id)}/reactivate`, "POST");
      return "Subscription reactivated: it is active and delivers again.";
    }

    async function sendTest(type) {
      const { data: r } = await api(`/v1/webhooks/${encodeURIComponent(id)}/test`, "POST", type ? { type } : {});
      const ok = r.statusCode !== null && r.statusCode >= 200 && r.statusCode < 300;
      return [h("p", null, h("strong", null, `Test event ${r.eventType || type}: `),
        r.statusCode !== null ? `HTTP ${r.statusCode}` : "no answer", ` in ${ms(r.durationMs)}`,
        ok ? " — succeeded." : " — failed.", r.error ? ` Error: ${r.error}.` : ""),
        h("p", null, "Response: "), bodyExcerpt(r.responseBody, r.responseBodyEncoding),
        r.traceId ? h("p", null, "Trace: ", traceLink(r.traceId)) : null];
    }

    async function recover(value) {
      if (!value) throw new ApiError(400, { title: "Bad Request", status: 400, errors: [{ field: "since", message: "is required (such as 2h, 7d or an RFC 3339 time)" }] }, "since is required");
      const { data: r } = await api(`/v1/webhooks/${encodeURIComponent(id)}/recover`, "POST", { since: value });
      return h("p", null, `Rescheduled ${r.recovered} failed deliver${r.recovered === 1 ? "y" : "ies"} since `,
        time(r.since), r.until ? [" until ", time(r.until)] : "", ".");
    }

    reload("");
  }

  // ---- deliveries ---------------------------------------------------------------------------

  function lastResult(d) {
    if (d.lastStatusCode !== null && d.lastStatusCode !== undefined) return `HTTP ${d.lastStatusCode}${d.lastError ? ` — ${d.lastError}` : ""}`;
    return d.lastError || "—";
  }

  function deliveryRow(d, withSub) {
    return h("tr", { "data-id": d.id },
      h("td", null, h("a", { href: deliveryHref(d.id) }, code(d.id))),
      h("td", null, time(d.createdAt)),
      h("td", { class: "status" }, badge(d.status)),
      h("td", null, d.eventType),
      withSub ? h("td", null, h("a", { href: subHref(d.subscriptionId) }, code(d.subscriptionId))) : null,
      h("td", { class: "num" }, String(d.attempts)),
      h("td", null, lastResult(d)),
      h("td", null, time(d.nextAttemptAt)));
  }

  function deliveries(ctx, params) {
    const body = start("deliveries", "Deliveries", true);
    const f = { status: params.get("status") || "", subscription: params.get("subscription") || "", event_type: params.get("event_type") || "" };
    const opt = (value, label, current) => h("option", { value, selected: value === current }, label);
    const status = h("select", { id: "status-filter" },
      [["", "any"], ["pending", "pending"], ["succeeded", "succeeded"], ["failed", "failed"]].map(([v, l]) => opt(v, l, f.status)));
    const sub = h("select", { id: "subscription-filter" }, opt("", "any", f.subscription));
    const type = h("select", { id: "type-filter" }, opt("", "any", f.event_type));
    const t = table("deliveries", ["Delivery", "Created", "Status", "Event type", "Subscription", "Attempts", "Last result", "Next attempt"], "Deliveries");
    const more = h("div", { class: "more-holder" });
    const empty = h("p", { class: "muted" });
    const field = (id, label, el) => h("div", { class: "field" }, h("label", { for: id }, label), el);

    function query() {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);
      return q.toString();
    }

    let tableSeq = 0; // bumped by every load of the table: pages of an older one are dropped
    const loadTable = () => run(ctx, async () => {
      loading();
      const mine = ++tableSeq;
      const current = () => mine === tableSeq;
      more.replaceChildren();
      const q = query();
      const page = await api(`/v1/deliveries?limit=${PAGE}${q ? `&${q}` : ""}`);
      if (!alive(ctx) || !current()) return;
      const rowFn = (d) => deliveryRow(d, true);
      t.tbody.replaceChildren(...page.data.map(rowFn));
      empty.textContent = page.data.length ? "" : "No deliveries match these filters.";
      moreButton(ctx, more, page.next, t.tbody, rowFn, current);
      loaded();
    });

    for (const [key, el] of [["status", status], ["subscription", sub], ["event_type", type]]) {
      el.addEventListener("change", () => {
        f[key] = el.value;
        const q = query();
        history.replaceState(null, "", `#/deliveries${q ? `?${q}` : ""}`);
        $("error").replaceChildren();
        loadTable();
      });
    }

    run(ctx, async () => {
      const subs = await allPages("/v1/webhooks?limit=1000");
      if (!alive(ctx)) return;
      const ids = subs.map((s) => s.id);
      if (f.subscription && !ids.includes(f.subscription)) ids.push(f.subscription);
      sub.append(...ids.map((id) => opt(id, id, f.subscription)));
      const types = [...new Set(subs.flatMap((s) => s.events || []).concat(f.event_type ? [f.event_type] : []))].sort();
      type.append(...types.map((x) => opt(x, x, f.event_type)));
      refill(body, h("div", { class: "filters" }, field("status-filter", "Status", status),
        field("subscription-filter", "Subscription", sub), field("type-filter", "Event type", type)),
      t.wrap, empty, more);
      await loadTable();
    });
  }

  function delivery(ctx, id) {
    const body = start("delivery", "Delivery", true);
    const summary = h("div");
    const attempts = h("div");
    const payload = h("div");
    let rendered = false;

    let seq = 0; // only the latest load schedules the next poll
    let pollDelay = POLL_FIRST;

    // poll loads the delivery again; a hidden tab skips its turn and asks again later.
    function poll() {
      if (document.hidden) later(ctx, poll, pollDelay);
      else run(ctx, load);
    }

    // load shows the delivery and, while it is pending (or could not be fetched for a reason
    // that may pass), looks again: after 2 seconds at first, waiting half as long again each
    // time, and at least every 15. The first load that succeeds lays out the page.
    let failed = false;
    async function load() {
      const mine = ++seq;
      let d = null;
      let again = false;
      try {
        ({ data: d } = await api(`/v1/deliveries/${encodeURIComponent(id)}`));
        again = d.status === "pending";
        if (failed && alive(ctx)) $("error").replaceChildren(); // what went wrong has passed
        failed = false;
      } catch (e) {
        again = e.status === 0 || e.status === 429 || e.status >= 500;
        failed = true;
        throw e;
      } finally {
        if (again && alive(ctx) && mine === seq) {
          later(ctx, poll, pollDelay);
          pollDelay = Math.min(pollDelay * 1.5, POLL_MAX);
        }
      }
      if (!alive(ctx) || mine !== seq) return null;
      fill(summary, h("dl", { class: "details" },
        h("dt", null, "Status"), h("dd", null, badge(d.status, "delivery-status")),
        h("dt", null, "ID"), h("dd", null, code(d.id)),
        h("dt", null, "Event"), h("dd", null, code(d.eventId), ` (${d.eventType})`),
        h("dt", null, "Subscription"), h("dd", null, h("a", { href: subHref(d.subscriptionId) }, code(d.subscriptionId))),
        h("dt", null, "Attempts"), h("dd", null, String(d.attempts)),
        h("dt", null, "Last result"), h("dd", null, lastResult(d)),
        h("dt", null, "Created"), h("dd", null, time(d.createdAt)),
        h("dt", null, "Next attempt"), h("dd", null, time(d.nextAttemptAt)),
        h("dt", null, "Finished"), h("dd", null, time(d.finishedAt))),
      d.status === "pending" ? h("p", { class: "muted" }, "Pending: this page follows it until it finishes.") : null);
      const t = table("attempts", ["#", "At", "Duration", "Result", "Response", "Trace"], "Attempts");
      (d.attemptLog || []).forEach((a, i) => t.tbody.append(h("tr", { class: "attempt" },
        h("td", { class: "num" }, String(i + 1)), h("td", null, time(a.at)), h("td", { class: "num" }, ms(a.durationMs)),
        h("td", { class: a.error || (a.statusCode || 0) >= 300 ? "bad" : "good" },
          a.statusCode !== null && a.statusCode !== undefined ? `HTTP ${a.statusCode}` : "", a.statusCode !== null && a.error ? " — " : "", a.error || ""),
        h("td", null, bodyExcerpt(a.responseBody, a.responseBodyEncoding)), h("td", null, traceLink(a.traceId)))));
      fill(attempts, h("h2", null, "Attempts"), t.wrap,
        (d.attemptLog || []).length ? null : h("p", { class: "muted" }, "No attempt yet."));
      if (!rendered) {
        rendered = true;
        await loadPayload(d.eventId);
        if (!alive(ctx)) return null;
        refill(body, summary, h("div", { class: "actions" }, retry,
          h("span", { class: "muted" }, " Delivers again now, whatever its status.")), attempts, payload);
        loaded();
      }
      return d;
    }

    async function loadPayload(eventId) {
      try {
        const { data: ev } = await api(`/v1/events/${encodeURIComponent(eventId)}`);
        if (!alive(ctx)) return;
        fill(payload, h("h2", null, "Payload"),
          h("p", { class: "muted" }, `Event ${ev.type}, received `, time(ev.receivedAt), ". Secret-looking fields are shown as ********."),
          h("pre", { id: "payload", class: "json", tabindex: "0" }, JSON.stringify(redact(ev.payload), null, 2)));
      } catch (e) {
        if (e.status === 401 || !alive(ctx)) throw e;
        // The attempts are worth seeing without the payload: say what went wrong in its place.
        fill(payload, h("h2", null, "Payload"), h("p", { id: "payload", class: e.status === 404 ? "muted" : "bad" },
          e.status === 404 ? "The event is no longer stored." : `The payload could not be loaded: ${e.message}`));
      }
    }

    const retry = h("button", { type: "button", id: "retry" }, "Retry");
    retry.addEventListener("click", () => run(ctx, async () => {
      $("error").replaceChildren();
      retry.disabled = true;
      loading();
      try {
        await api(`/v1/deliveries/${encodeURIComponent(id)}/retry`, "POST");
        clearTimers();
        pollDelay = POLL_FIRST;
        const d = await load();
        showResult(!d ? "Retry requested." : `Retry requested. Status now: ${d.status}` +
          (d.status === "pending" ? " (this page follows it until it finishes)." : "."));
      } finally {
        retry.disabled = false;
        if (alive(ctx)) loaded();
      }
    }));

    run(ctx, load);
  }

  // ---- overview -----------------------------------------------------------------------------

  function chartFrame(id, label, width, height) {
    return svg("svg", { id, role: "img", "aria-label": label, viewBox: `0 0 ${width} ${height}`, class: "chart", focusable: "false" },
      svg("title", null, label));
  }

  function axisLabels(el, W, H, pad, max, unit) {
    el.append(
      svg("line", { x1: pad, y1: H - 20, x2: W - 4, y2: H - 20, class: "axis" }),
      svg("text", { x: 4, y: 14, class: "tick" }, `${max}${unit}`),
      svg("text", { x: 4, y: H - 22, class: "tick" }, "0"),
      svg("text", { x: pad, y: H - 4, class: "tick" }, "60 min ago"),
      svg("text", { x: W - 4, y: H - 4, class: "tick", "text-anchor": "end" }, "now"));
  }

  // Charts are drawn at the width they are shown at, so that their text keeps its size.
  const chartWidth = () => Math.max(280, Math.min(1400, $("view").clientWidth - 34));

  function deliveriesChart(minutes) {
    const W = chartWidth(), H = 180, pad = 34, top = 16, plotH = H - 20 - top;
    const delivered = minutes.reduce((n, m) => n + (m.delivered || 0), 0);
    const failed = minutes.reduce((n, m) => n + (m.failed || 0), 0);
    const max = Math.max(1, ...minutes.map((m) => Math.max(m.delivered || 0, m.failed || 0)));
    const peak = minutes.reduce((b, m) => ((m.delivered || 0) + (m.failed || 0) > (b.delivered || 0) + (b.failed || 0) ? m : b), minutes[0] || {});
    const label = `Attempts per minute over the last hour: ${delivered} delivered and ${failed} failed in total` +
      (peak && (peak.delivered || peak.failed) ? `; busiest minute ${new Date(peak.start).toLocaleTimeString()} with ${peak.delivered} delivered and ${peak.failed} failed.` : ".");
    const el = chartFrame("chart-deliveries", label, W, H);
    axisLabels(el, W, H, pad, max, "");
    const slot = (W - pad - 8) / Math.max(minutes.length, 1);
    const bw = Math.max(1, slot / 2 - 0.5);
    minutes.forEach((m, i) => {
      const x = pad + i * slot;
      for (const [k, dx] of [["delivered", 0], ["failed", bw]]) {
        const v = m[k] || 0;
        if (!v) continue;
        const bh = (v / max) * plotH;
        el.append(svg("rect", { x: (x + dx).toFixed(1), y: (top + plotH - bh).toFixed(1), width: bw.toFixed(1), height: bh.toFixed(1), class: `bar-${k}` },
          svg("title", null, `${new Date(m.start).toLocaleTimeString()}: ${v} ${k}`)));
      }
    });
    return el;
  }

  function queueChart(minutes) {
    const W = chartWidth(), H = 150, pad = 34, top = 16, plotH = H - 20 - top;
    const known = minutes.filter((m) => m.pending !== null && m.pending !== undefined);
    const max = Math.max(1, ...known.map((m) => m.pending));
    const last = known.length ? known[known.length - 1].pending : null;
    const label = known.length
      ? `Queue depth per minute over the last hour: at most ${Math.max(...known.map((m) => m.pending))}, latest ${last}; ${minutes.length - known.length} minutes without a sample.`
      : "Queue depth per minute over the last hour: no samples yet.";
    const el = chartFrame("chart-queue", label, W, H);
    axisLabels(el, W, H, pad, max, "");
    const step = (W - pad - 8) / Math.max(minutes.length - 1, 1);
    let d = "";
    let pen = false;
    minutes.forEach((m, i) => {
      if (m.pending === null || m.pending === undefined) { pen = false; return; }
      const x = (pad + i * step).toFixed(1), y = (top + plotH - (m.pending / max) * plotH).toFixed(1);
      d += `${pen ? "L" : "M"}${x} ${y} `;
      const lone = !pen && (i + 1 >= minutes.length || minutes[i + 1].pending === null || minutes[i + 1].pending === undefined);
      if (lone) el.append(svg("circle", { cx: x, cy: y, r: 2.5, class: "dot-queue" }));
      pen = true;
    });
    if (d) el.append(svg("path", { d: d.trim(), class: "line-queue" }));
    return el;
  }

  function legend(items) {
    return h("ul", { class: "legend" }, items.map(([cls, text]) => h("li", null, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text)));
  }

  function overview(ctx) {
    const body = start("overview", "Overview", true);
    const refresh = () => run(ctx, async () => {
      if (document.hidden && $("view").hasAttribute("data-loaded")) { // a hidden tab skips its turn
        later(ctx, refresh, 10000);
        return;
      }
      try {
        const st = await stats();
        if (!alive(ctx)) return;
        if (!st) {
          refill(body, h("p", { class: "note" }, "This gateway does not serve GET /v1/stats: statistics unavailable."));
          loaded();
          return;
        }
        const q = st.queue || {};
        const s = st.subscriptions || {};
        const minutes = st.minutes || [];
        const card = (title, id, value, extra) => h("div", { class: "card" }, h("h2", null, title), h("p", { class: "big", id }, value), extra);
        refill(body,
          h("div", { class: "cards" },
            card("Queue depth", "queue-depth", String(q.pending ?? "—"), h("p", { class: "muted" }, "deliveries pending")),
            card("Oldest pending", "oldest-age", q.pending ? duration(q.oldestPendingAgeSeconds) : "—",
              h("p", { class: "muted" }, "age of the oldest pending delivery")),
            h("div", { class: "card" }, h("h2", null, "Subscriptions"), h("ul", { class: "plain" },
              h("li", null, h("a", { href: "#/subscriptions?state=active" }, `${s.active ?? 0} active`)),
              h("li", null, h("a", { href: "#/subscriptions?state=error" }, `${s.inErrorState ?? 0} in error state`)),
              h("li", null, h("a", { href: "#/subscriptions?state=deactivated" }, `${s.inactive ?? 0} deactivated`))))),
          h("section", { class: "chart-box", "aria-labelledby": "chart1-title" },
            h("h2", { id: "chart1-title" }, "Attempts per minute, last hour"),
            legend([["bar-delivered", "delivered (succeeded)"], ["bar-failed", "failed"]]), deliveriesChart(minutes)),
          h("section", { class: "chart-box", "aria-labelledby": "chart2-title" },
            h("h2", { id: "chart2-title" }, "Queue depth per minute, last hour"),
            legend([["line-queue", "pending deliveries (gaps: no sample)"]]), queueChart(minutes)),
          h("p", { class: "muted" }, "Attempts and queue samples are counted by this gateway process since ",
            time(st.countingSince), ". Updated ", time(st.at), "; refreshed every 10 seconds."));
        loaded();
      } finally {
        if (alive(ctx)) {
          $("view").setAttribute("data-refreshed", new Date().toISOString());
          later(ctx, refresh, 10000);
        }
      }
    });
    refresh();
  }

  // ---- start --------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("signin").addEventListener("submit", signIn);
    $("signout").addEventListener("click", () => signOut(""));
    $("skip").addEventListener("click", (e) => {
      e.preventDefault();
      const target = $("signin-panel").hidden ? $("view").querySelector("h1") || $("view") : $("token");
      target.focus();
    });
    window.addEventListener("hashchange", () => {
      if (sessionStorage.getItem(TOKEN_KEY)) route();
    });
    if (sessionStorage.getItem(TOKEN_KEY)) route();
    else signOut("");
  });
})();
