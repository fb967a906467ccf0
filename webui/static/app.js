// Nixie Router UI behaviour. Served as a file: the CSP forbids inline scripts.
"use strict";
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // confirm before destructive buttons
  document.addEventListener("submit", (ev) => {
    const msg = ev.target.getAttribute && ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  // mobile navigation
  const toggle = document.querySelector(".nav-toggle");
  const side = document.getElementById("sidebar");
  if (toggle && side) {
    toggle.addEventListener("click", () => {
      const open = side.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  // flakes page: while an evaluation is queued or running, poll the API and reload
  // the page once a flake's state changes (its configurations or Nix's error are in);
  // nothing pending: no polling. The pause grows from 1 s to at most 5 s while
  // nothing changes (a flake stays queued while nixie serve is down).
  const flakeList = document.getElementById("flakes");
  if (flakeList && flakeList.dataset.pending) {
    const POLL_FIRST_MS = 1000, POLL_MAX_MS = 5000;
    let pause = POLL_FIRST_MS;
    const shown = {};
    flakeList.querySelectorAll("[data-flake-id]").forEach((el) => { shown[el.dataset.flakeId] = el.dataset.evalState; });
    async function pollFlakes() {
      try {
        const r = await fetch(flakeList.dataset.pollUrl, { headers: { "Accept": "application/json" }, credentials: "same-origin" });
        if (r.status === 401) { window.location.reload(); return; }  // logged out: to the login page
        if (r.ok) {
          const now = await r.json();
          const changed = now.length !== Object.keys(shown).length ||
            now.some((f) => shown[String(f.id)] !== f.eval_state);
          if (changed) { window.location.reload(); return; }
        }
      } catch (e) { /* keep polling: the appliance may be restarting */ }
      pause = Math.min(pause * 1.5, POLL_MAX_MS);
      setTimeout(pollFlakes, pause);
    }
    setTimeout(pollFlakes, pause);
  }

  // build page: follow the log and the progress by polling the API
  const log = document.getElementById("build-log");
  if (log) {
    const url = log.dataset.logUrl;
    let offset = 0;
    let finished = false;
    const statusEl = document.getElementById("build-status");
    const bar = document.getElementById("build-progress");
    const barText = document.getElementById("build-progress-text");
    const state = document.getElementById("log-state");
    const setText = (id, v) => { const el = document.getElementById(id); if (el && v) el.textContent = v; };
    const fmt = (t) => t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
    async function poll() {
      try {
        const r = await fetch(url + "?offset=" + offset, { headers: { "Accept": "application/json", "X-CSRFToken": csrf() }, credentials: "same-origin" });
        if (r.ok) {
          const d = await r.json();
          if (d.text) {
            const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
            log.append(document.createTextNode(d.text));
            if (atBottom) log.scrollTop = log.scrollHeight;
          }
          offset = d.offset;
          if (statusEl && statusEl.dataset.status !== d.status) {
            statusEl.dataset.status = d.status;
            const b = statusEl.querySelector(".badge");
            if (b) { b.textContent = d.status; b.className = "badge badge-" + ({queued: "muted", running: "info", succeeded: "ok", failed: "bad", cancelled: "muted"}[d.status] || "muted"); }
          }
          if (bar && typeof d.progress === "number") {
            bar.value = Math.round(d.progress * 100);
            if (barText) barText.textContent = Math.round(d.progress * 100) + " %" + (d.phase ? " · " + d.phase : "");
          } else if (barText && d.phase) {
            barText.textContent = d.phase;
          }
          setText("build-started", fmt(d.started_at));
          setText("build-finished", fmt(d.finished_at));
          setText("build-toplevel", d.toplevel);
          const err = document.getElementById("build-error");
          if (err && d.error) { err.textContent = d.error; err.hidden = false; }
          finished = d.final && !d.more;
          if (finished) {
            if (bar && d.status === "succeeded") { bar.value = 100; if (barText) barText.textContent = "100 %"; }
            if (state) state.textContent = "finished: " + d.status;
          }
        }
      } catch (e) { /* keep polling: the appliance may be restarting */ }
      if (!finished) setTimeout(poll, offset && !finished ? 700 : 1000);
    }
    poll();
  }

  // copy buttons (the cache snippet, a new webhook secret): the text of the element named
  // by data-copy; where the clipboard API is not allowed (plain http), select it instead
  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest && ev.target.closest("[data-copy]");
    if (!btn) return;
    const el = document.getElementById(btn.dataset.copy);
    if (!el) return;
    const select = () => {
      const range = document.createRange();
      range.selectNodeContents(el);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(el.textContent).then(() => { btn.textContent = "Copied"; }, select);
    } else {
      select();
      btn.textContent = "Selected: press Ctrl+C";
    }
  });
  // network page: a change waiting for confirmation. Count down to its rollback and
  // follow its state through the API; when the router does not answer (the change cut
  // this browser off), say so and keep asking: the router rolls the change back by
  // itself when the time is up, and then the page comes back with the outcome.
  const netChange = document.getElementById("net-change");
  if (netChange && netChange.dataset.state === "pending") {
    const deadline = Date.now() + parseFloat(netChange.dataset.secondsLeft || "0") * 1000;
    const countdown = document.getElementById("net-countdown");
    const lost = document.getElementById("net-lost");
    const tick = () => {
      if (countdown) countdown.textContent = String(Math.max(0, Math.ceil((deadline - Date.now()) / 1000)));
    };
    tick();
    setInterval(tick, 250);
    async function pollChange() {
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(), 2000);
      try {
        const r = await fetch(netChange.dataset.statusUrl, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store", signal: ctl.signal });
        if (r.status === 401) { window.location.reload(); return; }
        if (r.ok) {
          if (lost) lost.hidden = true;
          const d = await r.json();
          if (d.state !== "pending") { window.location.assign(netChange.dataset.pageUrl); return; }
        }
      } catch (e) {
        if (lost) lost.hidden = false;  // cut off: the router rolls back by itself
      } finally {
        clearTimeout(timer);
      }
      setTimeout(pollChange, 1000);
    }
    setTimeout(pollChange, 1000);
  }
})();
