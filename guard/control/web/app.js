// dnsguard dashboard. Every string that comes from the guard (device
// names from DHCP, query names) is put in the page as text (textContent),
// never as markup.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const open = new Set(); // devices whose evidence is shown
  let timer = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
    if (r.status === 401) { showLogin(); throw new Error("login"); }
    if (!r.ok) throw new Error(path + ": " + r.status);
    return r.status === 204 ? null : r.json();
  }

  function showLogin() {
    if (timer) { clearInterval(timer); timer = null; }
    $("app").hidden = true; $("logout").hidden = true; $("login").hidden = false;
  }

  function showApp() {
    $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
    refresh();
    if (!timer) timer = setInterval(refresh, 5000);
  }

  function ago(t) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  // spark draws a device's recent query rates (the guard samples them).
  function spark(rates) {
    rates = rates || [];
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", "60"); svg.setAttribute("height", "16");
    const max = Math.max(0.1, ...rates);
    const step = 60 / Math.max(1, rates.length - 1);
    const pts = rates.map((r, i) => (i * step).toFixed(1) + "," + (15 - r / max * 14).toFixed(1)).join(" ");
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts); line.setAttribute("fill", "none"); line.setAttribute("stroke", "#36c");
    svg.appendChild(line);
    const td = el("td");
    td.appendChild(svg);
    td.appendChild(el("span", rates.length ? " " + rates[rates.length - 1].toFixed(1) + "/s" : ""));
    return td;
  }

  function mark(v, why) {
    const cls = v === "x" ? "x" : v === "ok" ? "ok" : "na";
    const td = el("td", v || "-", cls);
    if (why) td.title = why;
    return td;
  }

  function grade(g) {
    if (!g) return "";
    let s = g.verdict;
    if (g.sigma !== undefined) s += ", sigma " + g.sigma;
    if (g.n !== undefined) s += ", n " + g.n;
    if (g.reason) s += " (" + g.reason + ")";
    return s;
  }

  async function setPolicy(id, o) {
    try {
      await api("/api/v1/devices/" + encodeURIComponent(id), {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(o),
      });
      refresh();
    } catch (e) { $("status").textContent = String(e.message); }
  }

  function policyCell(v) {
    const td = el("td");
    const o = v.override || {};
    const b = (label, on, next) => {
      const btn = el("button", label, on ? "on" : "");
      btn.type = "button";
      btn.dataset.device = v.id; btn.dataset.action = label.toLowerCase();
      btn.addEventListener("click", () => setPolicy(v.id, next));
      td.appendChild(btn);
    };
    b("Exempt", v.exempt, Object.assign({}, o, { exempt: !v.exempt }));
    b("Strict", v.strict, Object.assign({}, o, { strict: !v.strict }));
    if (v.override) b("Clear", false, {});
    if (classNames.length) {
      const sel = el("select");
      sel.dataset.device = v.id;
      sel.appendChild(el("option", "class: " + (v.class || "none"))).value = "";
      for (const c of classNames) {
        const opt = el("option", c);
        opt.value = c;
        sel.appendChild(opt);
      }
      sel.addEventListener("change", () => { if (sel.value) setPolicy(v.id, Object.assign({}, o, { class: sel.value })); });
      td.appendChild(sel);
    } else if (v.class) {
      td.appendChild(el("span", " " + v.class, "mac"));
    }
    return td;
  }

  let rateHist = {};
  let classNames = [];

  function deviceRows(tbody, v) {
    const tr = el("tr");
    const name = el("td", null, "dev");
    name.appendChild(el("div", v.name || "(no name)"));
    name.appendChild(el("div", v.mac || v.id, "mac"));
    name.addEventListener("click", () => { open.has(v.id) ? open.delete(v.id) : open.add(v.id); refresh(); });
    tr.appendChild(name);
    tr.appendChild(el("td", (v.ips || []).join(" ")));
    tr.appendChild(el("td", ago(v.last_seen)));
    tr.appendChild(spark(rateHist[v.id]));
    tr.appendChild(el("td", v.queries));
    const t = v.table1 || {};
    const bypass = (v.bypass || []).map((a) => a.kind + " " + a.target + " x" + a.count).join("; ");
    tr.appendChild(mark(t.secure_dns, "cleartext queries: " + v.queries));
    tr.appendChild(mark(t.random_port, "source port: " + grade(v.port)));
    tr.appendChild(mark(t.random_id, "transaction ID: " + grade(v.txid)));
    tr.appendChild(mark(t.query_consistency));
    tr.appendChild(mark(t.modified_rr_resilience));
    tr.appendChild(mark(t.forged_ttl_resilience));
    tr.appendChild(mark(t.dos_resilience, "rate limited: " + v.rate_limited));
    tr.appendChild(mark(t.hard_coded_resolver, bypass));
    tr.appendChild(el("td", v.bypass_attempts));
    tr.appendChild(el("td", v.refused));
    tr.appendChild(policyCell(v));
    tbody.appendChild(tr);
    if (open.has(v.id)) {
      const ev = el("tr", null, "ev");
      const td = el("td");
      td.colSpan = 16;
      const lines = [
        "TXID: " + grade(v.txid), "Source port: " + grade(v.port), "EDNS: " + v.edns,
        "Rate limited: " + v.rate_limited + ", refused answers: " + v.refused + ", boots: " + v.boots,
        "Bypass attempts: " + (bypass || "none"),
        "Strict: " + v.strict + (v.strict_reason ? " (" + v.strict_reason + ")" : "") + ", exempt: " + v.exempt,
        "First seen: " + v.first_seen,
      ];
      for (const l of lines) td.appendChild(el("div", l));
      ev.appendChild(td);
      tbody.appendChild(ev);
    }
  }

  // fill replaces a table's rows; each cell is labelled with its
  // column's header (the phone layout shows rows as cards).
  function fill(id, rows) {
    const tbody = document.querySelector("#" + id + " tbody");
    tbody.replaceChildren();
    rows(tbody);
    const heads = [...document.querySelectorAll("#" + id + " thead th")].map((th) => th.title || th.textContent);
    for (const tr of tbody.rows) {
      [...tr.cells].forEach((td, i) => { td.dataset.label = heads[i] || ""; });
    }
  }

  async function refresh() {
    try {
      const [devs, stats, events, rates, classes] = await Promise.all([api("/api/v1/devices"), api("/api/v1/stats"),
        api("/api/v1/events"), api("/api/v1/rates"), api("/api/v1/classes")]);
      rateHist = rates || {};
      classNames = classes || [];
      fill("devices", (tb) => devs.filter((v) => !v.unconfirmed).forEach((v) => deviceRows(tb, v)));
      fill("upstreams", (tb) => (stats.upstreams || []).forEach((u) => {
        const tr = el("tr");
        [u.url, u.up ? "up" : "down", u.rtt_ms, u.queries, u.failures, u.refused].forEach((x) => tr.appendChild(el("td", x)));
        tb.appendChild(tr);
      }));
      fill("events", (tb) => events.slice(-50).reverse().forEach((e) => {
        const tr = el("tr");
        const what = e.kind === "bypass" ? e.bypass + " to " + e.target
          : (e.query || "") + " " + (e.type || "") + " EDE " + e.ede + " " + (e.text || "");
        [new Date(e.time).toLocaleTimeString(), e.kind, e.device, what].forEach((x) => tr.appendChild(el("td", x)));
        tb.appendChild(tr);
      }));
      $("status").textContent = devs.length + " devices, " + stats.listen.queries + " queries, cache hits " + stats.cache.hits;
    } catch (e) {
      if (e.message !== "login") $("status").textContent = String(e.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $("loginerr").textContent = "";
      const r = await fetch("/api/v1/login", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: $("token").value }),
      });
      if (r.status === 204) { $("token").value = ""; showApp(); return; }
      $("loginerr").textContent = r.status === 429 ? "Too many wrong tokens; wait a minute." : "Wrong token.";
    });
    $("logout").addEventListener("click", async () => {
      await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin" });
      showLogin();
    });
    api("/api/v1/stats").then(showApp, () => {});
  });
})();
