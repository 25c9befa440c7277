// The login page (/login): a name and a password for a session cookie
// (HttpOnly, SameSite=Strict: the page never sees it). ?next= is where to
// go afterwards, a path on this site only.

import { h, setAttr, setText } from "./dom.js";
import { setSession } from "./session.js";

export function safeNext(next) {
  return typeof next === "string" && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/login")
    ? next : "/";
}

export function loginView(navigate) {
  document.title = "Log in · Kiosk fleet";
  const main = document.getElementById("main");
  const name = h("input", { id: "login-name", name: "username", required: true, maxlength: 64,
    autocomplete: "username", autocapitalize: "none", spellcheck: "false", "data-testid": "login-name" });
  const password = h("input", { id: "login-password", name: "password", type: "password", required: true,
    autocomplete: "current-password", "data-testid": "login-password" });
  const button = h("button", { id: "login-submit", type: "submit", text: "Log in", "data-testid": "login-submit" });
  const status = h("p", { id: "login-status", class: "status", role: "status", "aria-live": "polite",
    "data-testid": "login-status" });
  const form = h("form", { id: "login-form", class: "stack-form" },
    h("label", { for: "login-name", text: "Name" }), name,
    h("label", { for: "login-password", text: "Password" }), password,
    button);
  main.replaceChildren(
    h("section", { id: "login", class: "card narrow", "aria-labelledby": "login-h" },
      h("h1", { id: "login-h", text: "Log in" }),
      h("p", { class: "muted small", text: "Every request is recorded with your name." }),
      form, status));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    setAttr(status, "class", "status");
    setText(status, "Logging in…");
    try {
      const r = await fetch("/api/session", {
        method: "POST",
        headers: { accept: "application/json", "content-type": "application/json" },
        body: JSON.stringify({ name: name.value.trim(), password: password.value }),
      });
      const data = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(typeof data.detail === "string" ? data.detail : `${r.status} ${r.statusText}`);
      setSession(data);
      password.value = "";
      navigate(safeNext(new URLSearchParams(location.search).get("next")));
    } catch (e) {
      setAttr(status, "data-state", "error");
      setAttr(status, "class", "status error");
      setText(status, `Not logged in: ${e.message}`);
      button.disabled = false;
    }
  });
  if (new URLSearchParams(location.search).get("changed") === "1") {
    setAttr(status, "data-state", "changed");
    setText(status, "Your password was changed and every session of yours ended: log in with the new one.");
  }
  name.focus();
  return { stop() {} };
}
