// People and places (/people, admins): every user with their role, sites
// and tokens; adding a user (a password made here is shown once), issuing
// an API token (shown once), revoking a token or a user; sites and which
// site each kiosk is in. The same as `kiosk-bridge users|sites|kiosks`.
// The access log (/access-log, admins and pharmacists): every request that
// changed something, who, what, when, from where and how it ended.

import { api } from "./api.js";
import { gridTable as grid, h, setAttr, setText, syncRows } from "./dom.js";
import { fmtTime, words } from "./format.js";
import { POLL_MS, poller, problem } from "./live.js";
import { may, session } from "./session.js";

const ROLES = ["admin", "pharmacist", "technician", "pharmacy_system", "viewer"];

/** A page the user's role may not see: say so rather than fail. */
function notYours(main, title, who) {
  main.replaceChildren(h("h1", { text: title }),
    h("p", { class: "status error", "data-testid": "not-yours", text: `This page is for ${who}; ask one of them.` }));
  return { stop() {} };
}

/** A status line that says what a form did, and a secret shown once. */
function outcome(id) {
  const status = h("p", { id, class: "status", role: "status", "aria-live": "polite", "data-testid": id });
  return {
    status,
    say(text, state, secret) {
      setAttr(status, "data-state", state);
      setAttr(status, "class", state === "error" ? "status error" : "status");
      status.replaceChildren(text);
      if (secret) {
        status.append(" ", h("code", { class: "secret", "data-testid": `${id}-secret`, text: secret }),
          h("span", { class: "muted small", text: " Copy it now: the bridge keeps only its hash and never shows it again." }));
      }
    },
  };
}

export function peopleView() {
  document.title = "People · Kiosk fleet";
  const main = document.getElementById("main");
  if (!may("manage")) return notYours(main, "People and sites", "admins");
  const users = h("tbody");
  const sites = h("tbody");
  const done = outcome("people-status");
  let byName = new Map();

  // Adding a user.
  const name = h("input", { id: "user-name", required: true, maxlength: 64, autocomplete: "off", autocapitalize: "none",
    spellcheck: "false", pattern: "[A-Za-z0-9][A-Za-z0-9._-]*", "data-testid": "user-name" });
  const role = h("select", { id: "user-role", "data-testid": "user-role" },
    ROLES.map((r) => h("option", { value: r, text: r.replace(/_/g, " ") })));
  const userSites = h("input", { id: "user-sites", maxlength: 1000, autocomplete: "off", placeholder: "every site",
    "data-testid": "user-sites" });
  const addUser = h("form", { id: "user-add", class: "stack-form", "data-testid": "user-add" },
    h("label", { for: "user-name", text: "Name" }), name,
    h("label", { for: "user-role", text: "Role" }), role,
    h("label", { for: "user-sites", text: "Sites (comma-separated)" }), userSites,
    h("button", { type: "submit", "data-testid": "user-add-submit", text: "Add user" }));
  addUser.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), role: role.value,
      sites: userSites.value.split(",").map((s) => s.trim()).filter(Boolean) };
    try {
      const u = await api("POST", "/api/users", body);
      done.say(u.password ? `User ${u.name} added (${words(u.role)}). Their first password:`
        : `User ${u.name} added (${words(u.role)}). Issue an API token for it below.`, "added", u.password);
      name.value = "";
      userSites.value = "";
      loop.poke();
    } catch (err) {
      done.say(`User not added: ${err.message}`, "error");
    }
  });

  // Sites.
  const siteName = h("input", { id: "site-name", required: true, maxlength: 64, autocomplete: "off",
    pattern: "[A-Za-z0-9][A-Za-z0-9._-]*", "data-testid": "site-name" });
  const addSite = h("form", { id: "site-add", class: "inline-form", "data-testid": "site-add" },
    h("label", { for: "site-name", text: "New site" }), siteName,
    h("button", { type: "submit", "data-testid": "site-add-submit", text: "Add site" }));
  addSite.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/api/sites", { name: siteName.value.trim() });
      done.say(`Site ${siteName.value.trim()} added.`, "added");
      siteName.value = "";
      loop.poke();
    } catch (err) {
      done.say(`Site not added: ${err.message}`, "error");
    }
  });
  const kiosk = h("select", { id: "assign-kiosk", "data-testid": "assign-kiosk" });
  const kioskSite = h("select", { id: "assign-site", "data-testid": "assign-site" });
  const assign = h("form", { id: "assign", class: "inline-form", "data-testid": "assign" },
    h("label", { for: "assign-kiosk", text: "Put kiosk" }), kiosk,
    h("label", { for: "assign-site", text: "in site" }), kioskSite,
    h("button", { type: "submit", "data-testid": "assign-submit", text: "Assign" }));
  assign.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("PUT", `/api/kiosks/${encodeURIComponent(kiosk.value)}/site`, { site: kioskSite.value });
      done.say(`Kiosk ${kiosk.value} is in site ${kioskSite.value} now.`, "assigned");
      loop.poke();
    } catch (err) {
      done.say(`Kiosk not assigned: ${err.message}`, "error");
    }
  });

  async function act(what, method, path, body, ok) {
    try {
      const r = await api(method, path, body);
      ok(r);
      loop.poke();
    } catch (err) {
      done.say(`${what} refused: ${err.message}`, "error");
    }
  }
  const me = (session() || {}).name;
  function userActions(u) {
    const box = h("div", { class: "inline-form" });
    if (u.revoked) return box;
    box.append(h("button", { type: "button", class: "plain", "data-testid": "token-issue", text: "Issue API token",
      onclick: () => act(`A token for ${u.name}`, "POST", `/api/users/${encodeURIComponent(u.name)}/tokens`, undefined,
        (t) => done.say(`API token ${t.id} issued for ${u.name}:`, "token", t.token)) }));
    if (u.name !== me) {
      box.append(h("button", { type: "button", class: "danger", "data-testid": "user-revoke", text: "Revoke user",
        onclick: () => {
          if (!confirm(`Revoke ${u.name}? Every session and token ends; the name stays on the records.`)) return;
          act(`Revoking ${u.name}`, "POST", `/api/users/${encodeURIComponent(u.name)}/revoke`, {},
            () => done.say(`User ${u.name} revoked.`, "revoked"));
        } }));
    }
    return box;
  }
  function tokenList(u) {
    const live = u.tokens.filter((t) => !t.revoked);
    if (!live.length) return h("span", { class: "muted", text: "none" });
    return h("ul", { class: "plain-list" }, live.map((t) => h("li", { "data-token": t.id },
      `${t.id} (${t.last_used ? `last used ${fmtTime(t.last_used)}` : "never used"}) `,
      h("button", { type: "button", class: "plain small", "data-testid": "token-revoke", text: "Revoke",
        onclick: () => act(`Revoking token ${t.id}`, "POST", `/api/users/${encodeURIComponent(u.name)}/revoke`,
          { token_id: t.id }, () => done.say(`Token ${t.id} of ${u.name} revoked.`, "revoked")) }))));
  }

  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true, text: "← Fleet" })),
    h("h1", { text: "People and sites" }),
    done.status,
    h("section", { class: "card wide", "aria-labelledby": "users-h" },
      h("h2", { id: "users-h", text: "Users" }),
      grid("users-table", "Every user, their role, sites and API tokens",
        ["Name", "Role", "Sites", "Since", "API tokens", ""], users)),
    h("section", { class: "card", "aria-labelledby": "user-add-h" },
      h("h2", { id: "user-add-h", text: "Add a user" }),
      h("p", { class: "muted small", text: "People get a first password, shown once here, to change after logging in; "
        + "the pharmacy system gets an API token instead." }),
      addUser),
    h("section", { class: "card", "aria-labelledby": "sites-h" },
      h("h2", { id: "sites-h", text: "Sites" }),
      grid("sites-table", "Sites and their kiosks", ["Site", "Kiosks"], sites),
      addSite, assign));

  const loop = poller(async () => {
    let us, ss, ks;
    try {
      [us, ss, ks] = await Promise.all([api("GET", "/api/users"), api("GET", "/api/sites"), api("GET", "/api/kiosks")]);
      problem("people", null);
    } catch (err) {
      problem("people", err);
      return;
    }
    byName = new Map(us.map((u) => [u.name, u]));
    syncRows(users, us.map((u) => u.name), (key) => h("tr", { "data-user": key, "data-testid": "user-row" },
      h("th", { scope: "row", text: key }), h("td"), h("td"), h("td"), h("td"), h("td")), (tr, key) => {
      const u = byName.get(key);
      setAttr(tr, "data-revoked", u.revoked ? "true" : "false");
      setText(tr.children[1], words(u.role) + (u.revoked ? ` (revoked ${fmtTime(u.revoked)})` : ""));
      setText(tr.children[2], u.sites.length ? u.sites.join(", ") : "every site");
      setText(tr.children[3], fmtTime(u.created));
      const sig = JSON.stringify([u.revoked, u.tokens]);
      if (tr.dataset.sig !== sig) {
        tr.dataset.sig = sig;
        tr.children[4].replaceChildren(tokenList(u));
        tr.children[5].replaceChildren(userActions(u));
      }
    });
    syncRows(sites, ss.map((s) => s.name), (key) => h("tr", { "data-site": key },
      h("th", { scope: "row", text: key }), h("td")), (tr, key) => {
      const s = ss.find((x) => x.name === key);
      setText(tr.children[1], s.kiosks.join(", ") || "none yet");
    });
    const fill = (sel, values) => {
      const keep = sel.value;
      if ([...sel.options].map((o) => o.value).join() === values.join()) return;
      sel.replaceChildren(...values.map((v) => h("option", { value: v, text: v })));
      if (values.includes(keep)) sel.value = keep;
    };
    fill(kiosk, ks.map((k) => k.id).sort());
    fill(kioskSite, ss.map((s) => s.name));
  }, POLL_MS * 4);
  return loop;
}

export function accessLogView() {
  document.title = "Access log · Kiosk fleet";
  const main = document.getElementById("main");
  if (!may("audit")) return notYours(main, "Access log", "admins and pharmacists");
  const rows = h("tbody");
  const who = h("input", { id: "log-user", maxlength: 64, autocomplete: "off", placeholder: "everyone",
    "data-testid": "log-user" });
  const more = h("button", { type: "button", class: "plain", "data-testid": "log-more", text: "Older entries", hidden: true });
  const filter = h("form", { class: "inline-form", id: "log-filter" },
    h("label", { for: "log-user", text: "Requests by" }), who,
    h("button", { type: "submit", "data-testid": "log-filter-submit", text: "Show" }));
  const note = h("p", { class: "muted", id: "log-note" });
  let next = null;
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true, text: "← Fleet" })),
    h("h1", { text: "Access log" }),
    h("p", { class: "muted small", text: "Every request that changed something: who, what, when, from where and how it ended. Nothing here can be changed." }),
    filter,
    h("section", { class: "card wide" },
      grid("access-table", "Every state-changing request, newest first",
        ["When", "Who", "Request", "Result", "From", "Detail"], rows), note, more));

  async function load(append) {
    const q = new URLSearchParams({ limit: "100" });
    if (who.value.trim()) q.set("user", who.value.trim());
    if (append && next) q.set("before", String(next.before));
    let r;
    try {
      r = await api("GET", `/api/access-log?${q}`);
      problem("access", null);
    } catch (err) {
      problem("access", err);
      return;
    }
    if (!append) rows.replaceChildren();
    for (const e of r.entries) {
      rows.append(h("tr", { "data-actor": e.actor || "", "data-status": e.status, "data-testid": "access-row" },
        h("td", { text: fmtTime(e.at) }),
        h("th", { scope: "row", text: e.actor ? `${e.actor} (${words(e.role)})` : "nobody (refused)" }),
        h("td", { text: `${e.method} ${e.path}` }),
        h("td", { class: e.status >= 400 ? "refused" : "", text: String(e.status) }),
        h("td", { text: e.ip || "—" }),
        h("td", { text: e.detail || "" })));
    }
    next = r.next;
    more.hidden = !next;
    setText(note, rows.children.length ? "" : "No request recorded yet.");
  }
  filter.addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  load(false);
  return { stop() {} };
}
